"""Every view builds from a real analysed example clip and shows the analysis' own numbers."""
import html
import re
import time

import numpy as np
import plotly.graph_objects as go
import pytest

from asr_core import audio, ctc, examples, longform, models, pipeline, views
from asr_core.features import FRAMES_PER_SECOND
from asr_core.vocab import NUM_CLASSES, display


@pytest.fixture(scope="module")
def a():
    ex = next(e for e in examples.listing() if e.text == "hello world")
    return pipeline.transcribe_file(str(ex.path))


def _heatmap(fig):
    return next(t for t in fig.data if isinstance(t, go.Heatmap))


def test_waveform(a):
    fig = views.waveform_figure(a)
    title = fig.layout.title.text
    assert f"{a.clip.seconds:.2f} s" in title and f"{len(a.clip.samples):,} samples" in title
    lo, hi = (np.asarray(t.y, dtype=float) for t in fig.data[:2])
    assert len(lo) == len(hi) <= views.MAX_WAVE_POINTS < len(a.clip.samples)
    assert np.all(lo <= hi)
    # the envelope keeps the true extremes of the clip
    assert lo.min() == pytest.approx(a.clip.samples.min()) and hi.max() == pytest.approx(a.clip.samples.max())
    # x is in frames, spanning the clip
    x = np.asarray(fig.data[0].x, dtype=float)
    assert x[0] == 0 and a.frames - 2 < x[-1] < a.frames


def test_envelope_short_input():
    s = np.array([0.0, 1.0, -1.0], dtype=np.float32)
    starts, lo, hi = views.envelope(s, buckets=10)
    assert list(starts) == [0, 1, 2] and list(lo) == list(s) and list(hi) == list(s)


def test_mfcc_heatmap(a):
    z = np.asarray(_heatmap(views.mfcc_figure(a)).z)
    assert z.shape == (40, a.frames)
    np.testing.assert_allclose(z, a.feats.T)


def test_softmax_heatmap_path_and_top3(a):
    fig = views.softmax_figure(a)
    hm = _heatmap(fig)
    z = np.asarray(hm.z)
    assert z.shape == (NUM_CLASSES, a.frames)
    np.testing.assert_allclose(z.sum(axis=0), 1.0, atol=1e-4)
    ticks = list(fig.layout.yaxis.ticktext)
    assert len(ticks) == NUM_CLASSES and "·" in ticks[0] and "␣" in ticks[1] and ticks[3] == "a"

    path = next(t for t in fig.data if t.name == "greedy path (argmax)")
    assert len(path.y) == a.frames
    np.testing.assert_array_equal(np.asarray(path.y), a.log_probs.argmax(axis=1))

    custom = np.asarray(path.customdata, dtype=object)
    assert custom.shape == (a.frames, 1 + 2 * views.TOP_K)
    order = np.argsort(-a.probs, axis=1)[:, :3]
    for t in range(a.frames):
        assert custom[t, 0] == pytest.approx(t / FRAMES_PER_SECOND)
        for j in range(3):
            assert custom[t, 1 + 2 * j] == display(order[t, j])
            assert custom[t, 2 + 2 * j] == pytest.approx(a.probs[t, order[t, j]], abs=1e-3)
    for j in range(3):
        assert f"customdata[{1 + 2 * j}]" in path.hovertemplate


def test_top_axis_shows_seconds(a):
    fig = views.softmax_figure(a)
    top = fig.layout.xaxis2
    assert top.side == "top" and top.matches == "x"
    for val, text in zip(top.tickvals, top.ticktext):
        assert text.endswith(" s") and float(text[:-2]) * FRAMES_PER_SECOND == pytest.approx(val)


def test_collapse_html_has_every_step(a):
    c = a.best_path
    page = views.collapse_html(a)
    for step in ["Best class at every frame", "Merge repeats", "Remove blanks", "Transcript"]:
        assert step in page
    assert f"{len(c.path)} frames" in page and f"{len(c.merged)} symbols" in page
    assert f"{len(c.labels)} characters" in page
    if c.text:
        assert html.escape(c.text) in page
    assert page.count("<span class=") >= len(c.path) + len(c.merged) + len(c.labels)
    # the static worked example: with a blank "hello" survives, without one it becomes "helo"
    assert "<b>hello</b> ✓" in page and "<b>helo</b> ✗" in page


def test_collapse_path_has_one_box_per_frame(a):
    """The browser's cursor (playhead.js) outlines box t - data-first-frame of the path row for frame t."""
    page = views.collapse_html(a)
    row = re.search(r'<div class="ctc-path" data-first-frame="(\d+)">(.*?)</div></div>', page)
    assert row and int(row.group(1)) == views.first_frame(a) == 0
    boxes = re.findall(r'<span class="[bsc]"[^>]*>([^<]*)</span>', row.group(2))
    assert [html.unescape(b) for b in boxes] == [display(k) for k in a.best_path.path]


def test_lengths(a):
    n = views.lengths(a)
    assert n == {"samples": len(a.clip.samples), "MFCC frames": a.frames, "network outputs": a.frames,
                 "after merging": len(a.best_path.merged), "transcript chars": len(a.best_path.labels)}
    fig = views.lengths_figure(a)
    assert list(fig.data[0].customdata) == list(n.values())
    assert fig.layout.yaxis.type == "log"
    L = n["transcript chars"]
    assert (f"T / L = {a.frames} / {L}" if L else "L = 0") in fig.layout.title.text


def test_info_markdown(a):
    line = views.info_markdown(a)
    assert f"{a.clip.seconds:.2f} s" in line and "16,000 Hz" in line and a.model_name in line
    # says when the outputs come from the bf16 copy (models.fast) rather than the float32 weights
    assert ("bfloat16" in line) == models.is_bf16_copy(models.fast(a.model_name))
    for name in ("gru", "rnn"):
        line = views.info_markdown(pipeline.transcribe_file(str(examples.listing()[0].path), name))
        assert ("bfloat16" in line) == models.is_bf16_copy(models.fast(name))
    assert not models.is_bf16_copy(models.fast("rnn"))


def test_model_labels(monkeypatch):
    names = models.available()
    choices = views.model_choices()
    assert [v for _, v in choices] == names
    cards = {
        "x": {"name": "x", "arch": {"type": "lstm", "num_layers": 2, "hidden_size": 256, "bidirectional": True},
              "headline": {"cer": 0.18, "wer": 0.4, "dataset": "speechocean762", "split": "test",
                           "decoder": "greedy"}},
        "y": {"name": "y", "arch": {"type": "rnn"}},
    }
    monkeypatch.setattr(models, "card", lambda name: cards[name])
    assert views.model_label("x") == "LSTM 2×256 bi — CER 0.18 on speechocean762 test, greedy"
    assert views.model_label("y") == "RNN — accuracy not yet measured"


def test_ten_second_clip_builds_fast_enough_to_print():
    """Builds every view for a ~10 s clip (T ≈ 1000) and prints the time; no timing assertion."""
    clips = {e.name: audio.load(str(e.path)).samples for e in examples.listing()}
    samples = np.concatenate([clips["long_sentence"], clips["hello_world"]])
    a = pipeline.analyse(audio.prepare(samples, audio.SAMPLE_RATE))
    assert a.clip.seconds > 10 and a.frames > 1000
    start = time.perf_counter()
    figs = [views.waveform_figure(a), views.mfcc_figure(a), views.softmax_figure(a), views.lengths_figure(a)]
    page = views.collapse_html(a)
    took = time.perf_counter() - start
    print(f"\nall views for a {a.clip.seconds:.1f} s clip (T={a.frames}): {took * 1000:.0f} ms")
    assert np.asarray(_heatmap(figs[2]).z).shape == (NUM_CLASSES, a.frames)
    assert len(figs[0].data[0].y) <= views.MAX_WAVE_POINTS
    assert f"{a.frames} frames" in page


def test_long_clip_views_show_a_window(a):
    """A clip longer than longform.VIEW_SECONDS: the panels show one window, on the recording's own time axis."""
    reps = 30  # ~38 s of the real analysed clip, repeated
    clip = audio.Clip(np.tile(a.clip.samples, reps), a.clip.original_rate, 1, [])
    lp = np.tile(a.log_probs, (reps, 1))
    long = pipeline.Analysis(clip, a.model_name, np.tile(a.feats, (reps, 1)), lp, ctc.greedy(lp))
    assert views.needs_window(long) and not views.needs_window(a)
    wave, mfcc, soft, page = views.detail_views(long, start_s=5.0)
    width = int(longform.VIEW_SECONDS * FRAMES_PER_SECOND)
    hm = _heatmap(soft)
    assert np.asarray(hm.z).shape == (NUM_CLASSES, width)
    assert hm.x[0] == 500 and hm.x[-1] == 500 + width - 1  # frame numbers of the whole recording
    np.testing.assert_allclose(np.asarray(_heatmap(mfcc).z), long.feats[500:500 + width].T)
    assert "showing 5.0–35.0 s" in soft.layout.title.subtitle.text
    assert float(soft.layout.xaxis2.ticktext[0][:-2]) >= 5.0
    assert f"{width} frames" in page and "of this window" in page
    assert 'data-first-frame="500"' in page  # the cursor finds frame t at box t - 500
    assert wave.data[0].x[0] == pytest.approx(500)
    assert "slider" in views.info_markdown(long)
