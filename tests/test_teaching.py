"""Teaching views: the computations behind them, on real synthesized speech and the shipped weights.

Nothing here assumes the models are trained, except where a test says so and skips without a
measured model card.
"""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from asr_core import align, beam, ctc, introspect, models, pipeline
from asr_core import teaching_views as tv
from asr_core.vocab import LABELS, encode, normalize_text

REFERENCE = "hello world, this is a test of the speech lab"   # what conftest's speech_wav says


def trained(name: str) -> bool:
    """The lead ships untrained placeholders (card status "UNTRAINED PLACEHOLDER") until training ends."""
    return "UNTRAINED" not in str(models.card(name).get("status", ""))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many tiny recurrent steps: one intra-op thread is much faster on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def feats(speech_clip):
    return pipeline.analyse(speech_clip, "rnn").feats


def _layer0_copy(rnn: nn.Module) -> nn.Module:
    """A one-layer, one-direction torch module with the first layer's forward weights."""
    ref = type(rnn)(rnn.input_size, rnn.hidden_size, batch_first=True)
    ref.load_state_dict({k: v for k, v in rnn.state_dict().items() if k.endswith("_l0")})
    return ref.eval()


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_hand_computed_states_match_torch(name, feats):
    u = introspect.unroll(name, feats)
    rnn = models.load(name).rnn
    with torch.no_grad():
        h_torch = _layer0_copy(rnn)(torch.from_numpy(feats)[None])[0][0].numpy()
    assert u.h.shape == (len(feats), rnn.hidden_size)
    np.testing.assert_allclose(u.h, h_torch, atol=1e-5)
    # o_t is the whole (float32) model's output; the main tab may show a bf16 LSTM's (models.fast), within bf16 rounding
    with torch.inference_mode():
        whole = models.load(name)(torch.from_numpy(feats)[None]).log_softmax(-1)[0].numpy()
    np.testing.assert_allclose(u.log_probs, whole, atol=1e-4)
    assert np.abs(np.exp(u.log_probs) - np.exp(pipeline.run_model(name, torch.from_numpy(feats)))).max() < 0.25


def test_lstm_gates_match_torch_cell(feats):
    """i, f, g, o recomputed by hand give torch's LSTMCell's h_t and c_t at every step."""
    u = introspect.unroll("lstm", feats)
    rnn = models.load("lstm").rnn
    cell = nn.LSTMCell(rnn.input_size, rnn.hidden_size)
    cell.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items() if k.endswith("_l0")})
    h = c = torch.zeros(1, rnn.hidden_size)
    with torch.no_grad():
        for t in range(len(feats)):
            h, c = cell(torch.from_numpy(feats[t])[None], (h, c))
            np.testing.assert_allclose(u.c[t], c[0].numpy(), atol=1e-5)
            np.testing.assert_allclose(u.h[t], h[0].numpy(), atol=1e-5)
    g = u.gates
    c_prev = np.vstack([np.zeros(u.hidden_size), u.c[:-1]])
    np.testing.assert_allclose(u.c, g["f"] * c_prev + g["i"] * g["g"], atol=1e-5)
    np.testing.assert_allclose(u.h, g["o"] * np.tanh(u.c), atol=1e-5)
    assert all(0 <= g[k].min() and g[k].max() <= 1 for k in "ifo")


def test_gru_gates_match_torch_cell(feats):
    u = introspect.unroll("gru", feats)
    rnn = models.load("gru").rnn
    cell = nn.GRUCell(rnn.input_size, rnn.hidden_size)
    cell.load_state_dict({k[:-3]: v for k, v in rnn.state_dict().items() if k.endswith("_l0")})
    h = torch.zeros(1, rnn.hidden_size)
    with torch.no_grad():
        for t in range(len(feats)):
            h = cell(torch.from_numpy(feats[t])[None], h)
            np.testing.assert_allclose(u.h[t], h[0].numpy(), atol=1e-5)
    h_prev = np.vstack([np.zeros(u.hidden_size), u.h[:-1]])
    np.testing.assert_allclose(u.h, (1 - u.gates["z"]) * u.gates["n"] + u.gates["z"] * h_prev, atol=1e-5)


def test_rnn_update_terms(feats):
    """The two norms shown beside h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h) are those two terms."""
    u = introspect.unroll("rnn", feats)
    rnn = models.load("rnn").rnn
    t = len(feats) // 2
    w_hh, w_ih = rnn.weight_hh_l0.detach().numpy(), rnn.weight_ih_l0.detach().numpy()
    rec = w_hh @ u.h[t - 1] + rnn.bias_hh_l0.detach().numpy()
    inp = w_ih @ feats[t] + rnn.bias_ih_l0.detach().numpy()
    assert u.recurrent_norm[t] == pytest.approx(np.linalg.norm(rec), rel=1e-4)
    assert u.input_norm[t] == pytest.approx(np.linalg.norm(inp), rel=1e-4)
    np.testing.assert_allclose(u.h[t], np.tanh(rec + inp), atol=1e-5)
    assert u.recurrent_norm[0] == pytest.approx(np.linalg.norm(rnn.bias_hh_l0.detach().numpy()), rel=1e-4)


def test_pca_path_is_the_main_direction(feats):
    u = introspect.unroll("rnn", feats)
    p = introspect.pca_path(u.h)
    assert p.coords.shape == (len(feats), 2)
    assert 1 >= p.explained[0] >= p.explained[1] >= 0
    centred = u.h - u.h.mean(axis=0)
    top = np.linalg.eigvalsh(np.cov(centred.T, bias=True))[-1]
    assert p.coords[:, 0].var() == pytest.approx(top, rel=1e-3)


# -- CTC loss and forced alignment --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_alignment_spans_cover_and_spell_the_reference(name, speech_clip):
    a = pipeline.analyse(speech_clip, name)
    al = align.align(a.log_probs, REFERENCE)
    text = normalize_text(REFERENCE)
    assert "".join(s.text for s in al.chars) == text
    assert [w.text for w in al.words] == text.split()
    spans = [(s.start, s.end) for s in al.chars]
    assert all(0 <= a0 < a1 <= a.frames for a0, a1 in spans)
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(spans, spans[1:]))   # ordered, never overlapping
    assert ctc.collapse(al.path).labels == encode(REFERENCE)
    for w in al.words:
        assert w.start_s < w.end_s and 0 < w.confidence <= 1
    # all paths of the text together are at least as probable as its best one
    assert -al.nll >= al.path_log_prob - 1e-3
    assert al.nll == pytest.approx(align.ctc_loss(a.log_probs, REFERENCE)["total"], rel=1e-5)
    assert -al.nll == pytest.approx(beam.labelling_log_prob(a.log_probs, text), rel=1e-4)
    doc = json.loads(json.dumps(al.to_json()))
    assert doc["text"] == text and len(doc["chars"]) == len(text)


def test_alignment_refuses_what_cannot_fit(speech_clip):
    a = pipeline.analyse(speech_clip, "rnn")
    with pytest.raises(align.AlignmentError, match="frames"):
        align.align(a.log_probs, "ab" * a.frames)
    with pytest.raises(align.AlignmentError, match="no letters"):
        align.align(a.log_probs, "?!")
    assert align.min_frames(encode("hello")) == 6   # the two l's need a blank between them


def test_segment_is_the_span_audio(speech_clip):
    a = pipeline.analyse(speech_clip, "rnn")
    word = align.align(a.log_probs, REFERENCE).words[1]
    seg = align.segment(a.clip.samples, word, pad_s=0.0)
    assert len(seg) == int(word.end_s * 16000) - int(word.start_s * 16000)


# -- greedy vs beam ------------------------------------------------------------------------------------

def test_two_frame_example_best_path_is_not_best_text():
    lp = tv.toy_log_probs(0.6)
    assert ctc.greedy(lp).text == ""
    # enumerate every path independently of the code under test
    totals = {}
    for path in itertools.product(range(len(LABELS)), repeat=2):
        p = math.exp(lp[0, path[0]] + lp[1, path[1]])
        totals[ctc.collapse(path).text] = totals.get(ctc.collapse(path).text, 0.0) + p
    assert totals["a"] == pytest.approx(0.64, abs=1e-6) and totals[""] == pytest.approx(0.36, abs=1e-6)
    assert math.exp(-align.labelling_nll(lp, [LABELS.index("a")])) == pytest.approx(totals["a"], rel=1e-5)
    assert math.exp(-align.labelling_nll(lp, [])) == pytest.approx(totals[""], rel=1e-5)
    rows, note = tv.toy_two_frames(0.6)
    assert len(rows) == 4 and "0.64" in note
    top = beam.beam_search(lp, beam=4, prune_blank=1.0, prune_char=0.0)[0]
    assert top.text == "a"


def test_beam_rows_use_exact_labelling_probabilities(speech_clip):
    a = pipeline.analyse(speech_clip, "rnn")
    hyps = beam.beam_search(a.log_probs, beam=8, nbest=3)
    rows, note = tv.beam_rows(a.log_probs, a.best_path.labels, hyps)
    assert rows[0][0] == "greedy" and len(rows) == 1 + len(hyps)
    for row, h in zip(rows[1:], hyps):
        assert row[3] == pytest.approx(beam.labelling_log_prob(a.log_probs, h.labels), abs=0.01)
        assert row[4] <= row[3] + 1e-3   # best path <= all paths
    assert note


# -- vanishing gradients --------------------------------------------------------------------------------

def test_gradients_are_measured_per_distance(feats):
    grads = introspect.gradients_all(feats, ["rnn", "lstm"])
    for g in grads.values():
        assert g.shape == (len(feats),) and np.all(g >= 0) and g[0] > 0
        assert g[50] < g[0]   # half a second back, every model depends less on the input
    reading = introspect.gradient_reading(grads)
    weakest = min(grads, key=lambda n: introspect.gradient_ratio(grads[n], 50))
    assert reading.startswith("50 frames") and f"{weakest.upper()} keeps the least" in reading


def test_rnn_gradient_vanishes_faster_than_lstm(feats):
    """Half a second back, the plain RNN keeps a smaller share of its gradient than the LSTM.

    Compared only between models in the same state (both placeholders or both trained): a trained
    RNN against a random LSTM (whose forget gates sit at 0.5) says nothing about the architectures.
    """
    if trained("rnn") != trained("lstm"):
        pytest.skip("one of rnn/lstm is trained and the other is still a placeholder")
    grads = introspect.gradients_all(feats, ["rnn", "lstm"])
    assert introspect.gradient_ratio(grads["rnn"], 50) < introspect.gradient_ratio(grads["lstm"], 50)


def test_gradients_leave_the_shared_model_untouched(feats):
    introspect.input_gradients("gru", feats[:80])
    assert all(p.grad is None for p in models.load("gru").parameters())


# -- order matters ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["rnn", "gru"])
def test_shuffling_frames_changes_more_than_the_order_of_outputs(name, feats):
    s = introspect.shuffle_experiment(name, feats, seed=0)
    assert not np.array_equal(s.feats, s.original)
    assert np.array_equal(np.sort(s.feats, axis=0), np.sort(s.original, axis=0))   # the same frames
    # the float32 model's outputs: the app's own (pipeline.run_model), or where the app runs a bf16 copy, nearly them
    app = pipeline.run_model(name, torch.from_numpy(feats))
    if models.is_bf16_copy(models.fast(name)):
        assert (s.original_log_probs.argmax(1) == app.argmax(1)).mean() > 0.99
        np.testing.assert_allclose(np.exp(s.original_log_probs), np.exp(app), atol=0.3)
    else:
        np.testing.assert_allclose(s.original_log_probs, app, atol=1e-4)
    # a frame-by-frame classifier would give exactly the original outputs, reordered
    assert not np.allclose(np.exp(s.log_probs), np.exp(s.original_log_probs)[s.perm], atol=1e-4)
    summary = tv.shuffle_summary(s)
    assert summary["same_set_of_frames"] and summary["mean_output_change"] > 0


@pytest.mark.parametrize("name", models.available())
def test_shuffling_frames_makes_the_reference_less_probable(name, feats):
    """A trained recurrent model finds the reference far less probable once the frames are shuffled."""
    if not trained(name):
        pytest.skip(f"{name}: untrained placeholder weights")
    s = introspect.shuffle_experiment(name, feats, seed=0)
    labels = encode(REFERENCE)
    before = align.labelling_nll(s.original_log_probs, labels)
    after = align.labelling_nll(s.log_probs, labels)
    assert after > before + 0.5 * len(labels)   # at least half a nat per character worse


# -- figures ---------------------------------------------------------------------------------------------

def test_stepper_figures_show_step_t(feats):
    u = introspect.unroll("lstm", feats)
    t = 40
    out = tv.stepper_output(u, t)
    np.testing.assert_allclose(np.sum(out.data[0].y), 1.0, atol=1e-4)
    chain = tv.chain_figure(u, t, window=3)
    highlighted = [s for s in chain.layout.shapes if s.line.color == tv.ACCENT]
    assert {(s.x0 + s.x1) / 2 for s in highlighted} == {t}
    strips = tv.stepper_strips(u, t)
    rows = list(strips.data[1].y)
    assert rows[0] == "h<sub>t</sub>" and any("forget" in r for r in rows)
    np.testing.assert_allclose(strips.data[1].z[0], u.h[t])
    md = tv.stepper_markdown(u, t)
    assert f"{u.gates['f'][t].mean():.2f}" in md
