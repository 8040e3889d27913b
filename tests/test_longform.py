"""Long recordings are computed in chunks: the joined result must be the one-pass result."""
import numpy as np
import pytest

from asr_core import audio, features, longform, pipeline


@pytest.fixture(scope="module")
def long_clip(make_speech):
    """About 70 s of speech: several synthesized sentences in a row, with a little room noise."""
    texts = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background",
             "it is easy to tell the depth of a well", "these days a chicken leg is a rare dish"]
    parts = [audio.load(str(make_speech(t))).samples for t in texts]
    samples = np.concatenate(parts * 6)
    samples = samples + 1e-3 * np.random.default_rng(0).standard_normal(len(samples)).astype(np.float32)
    assert len(samples) / audio.SAMPLE_RATE > 2.5 * longform.CHUNK_SECONDS
    return audio.prepare(samples, audio.SAMPLE_RATE)


def test_chunked_mfcc_equals_one_pass(long_clip):
    whole = features.mfcc(long_clip.samples)
    chunked = longform.mfcc(long_clip.samples)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked.numpy(), whole.numpy(), atol=1e-4)


@pytest.mark.parametrize("n", [16000 * 20 * 2, 16000 * 41 + 159, 16000 * 41 + 160, 16000 * 31 + 7])
def test_chunk_seams_at_awkward_lengths(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    np.testing.assert_allclose(longform.mfcc(x).numpy(), features.mfcc(x).numpy(), atol=1e-4)


@pytest.mark.parametrize("name", ["gru", "rnn"])
def test_causal_model_carries_state_across_chunks(long_clip, name):
    feats = features.mfcc(long_clip.samples)
    np.testing.assert_allclose(longform.run_model(name, feats), pipeline.run_model(name, feats), atol=1e-4)


def test_bidirectional_model_sees_context(long_clip):
    """The BiLSTM reads each chunk with 2 s of context on both sides: frame decisions agree almost everywhere."""
    feats = features.mfcc(long_clip.samples)
    chunked, whole = longform.run_model("lstm", feats), pipeline.run_model("lstm", feats)
    assert chunked.shape == whole.shape
    assert (chunked.argmax(1) == whole.argmax(1)).mean() > 0.97


def test_analyse_covers_the_whole_recording_and_window_cuts_it(long_clip):
    a = pipeline.analyse(long_clip, "gru")
    assert a.frames == longform.num_frames(len(long_clip.samples))
    assert a.log_probs.shape == (a.frames, 29)
    w = longform.window(a, start_s=25.0)
    assert w.offset_s == pytest.approx(25.0)
    assert w.frames == int(longform.VIEW_SECONDS * 100)
    np.testing.assert_array_equal(w.log_probs, a.log_probs[2500:2500 + w.frames])
    assert len(w.clip.samples) == w.frames * features.HOP_LENGTH
    end = longform.window(a, start_s=10_000)  # past the end: the last full window
    assert end.offset_s == pytest.approx(longform.max_start(a))
    assert end.frames == w.frames
