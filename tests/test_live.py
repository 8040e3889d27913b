"""The Live tab's handlers, fed chunks exactly as Gradio delivers a streaming microphone: (rate, int16 array)."""
import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_core import live_tab, models


@pytest.fixture(scope="module")
def browser_chunks(speech_wav):
    """The speech at 48 kHz int16, cut in half-second chunks as the browser sends them."""
    data, rate = sf.read(speech_wav, dtype="float32")
    x = AF.resample(torch.from_numpy(data), rate, 48_000).numpy()
    x = x + 1e-2 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    pcm = (0.5 * x / np.abs(x).max() * 32767).astype(np.int16)
    step = int(48_000 * live_tab.STREAM_EVERY)
    return [(48_000, pcm[i:i + step]) for i in range(0, len(pcm), step)]


def test_only_causal_models_are_offered():
    names = live_tab.causal_models()
    assert names and "lstm" not in names
    assert all(not models.card(n)["arch"].get("bidirectional", False) for n in names)


def test_a_session_streams_and_finishes(browser_chunks):
    state, frames = None, []
    for chunk in browser_chunks:
        state, text, fig, stats = live_tab.step(chunk, state, "gru")
        frames.append(state.frames)
        assert isinstance(text, str) and isinstance(fig, go.Figure) and "ms" in stats
    assert frames == sorted(frames) and frames[0] > 0          # the output grows chunk by chunk
    heard = sum(len(c[1]) for c in browser_chunks) / 48_000
    assert state.seconds_in == pytest.approx(heard)
    heat = fig.data[0]
    assert len(heat.y) == 29 and len(heat.x) <= live_tab.HEATMAP_SECONDS * 100
    assert np.allclose(np.asarray(heat.z).sum(axis=0), 1.0, atol=0.02)  # each column is a distribution
    final, text, fig, stats = live_tab.finish(state)
    assert final is None and "stopped" in stats
    assert state.frames == int(heard * 100) + 1                   # every 10 ms frame of the recording


def test_switching_model_starts_a_new_stream(browser_chunks):
    state, *_ = live_tab.step(browser_chunks[0], None, "gru")
    state2, *_ = live_tab.step(browser_chunks[1], state, "rnn")
    assert state2 is not state and state2.model_name == "rnn"


def test_bidirectional_model_gives_a_message(browser_chunks):
    with pytest.raises(gr.Error, match="bidirectional"):
        live_tab.step(browser_chunks[0], None, "lstm")


def test_empty_chunk_and_reset():
    assert live_tab.step(None, None, "gru")[0] is None
    state, text, fig, stats = live_tab.reset()
    assert state is None and text == "" and "Waiting" in stats
