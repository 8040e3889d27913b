"""The Live tab's handlers, fed chunks exactly as Gradio delivers a streaming microphone: (rate, int16 array)."""
from pathlib import Path

import gradio as gr
import numpy as np
import plotly.graph_objects as go
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_core import live_tab, models

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def browser_chunks(speech_wav):
    """The speech at 48 kHz int16, cut in 0.1 s chunks as Gradio's browser recorder sends them."""
    data, rate = sf.read(speech_wav, dtype="float32")
    x = AF.resample(torch.from_numpy(data), rate, 48_000).numpy()
    x = x + 1e-2 * np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    pcm = (0.5 * x / np.abs(x).max() * 32767).astype(np.int16)
    step = 4_800
    return [(48_000, pcm[i:i + step]) for i in range(0, len(pcm), step)]


def test_only_causal_models_are_offered():
    names = live_tab.causal_models()
    assert names and "lstm" not in names
    assert all(not models.card(n)["arch"].get("bidirectional", False) for n in names)


def test_a_session_streams_and_finishes(browser_chunks):
    state, frames, figures = None, [], []
    for chunk in browser_chunks:
        state, text, fig, stats = live_tab.step(chunk, state, "gru")
        frames.append(state.frames)
        assert isinstance(text, str) and "ms" in stats
        if isinstance(fig, go.Figure):
            figures.append((state.seconds_in, fig))
    assert frames == sorted(frames) and frames[0] > 0          # the output grows chunk by chunk
    # The heatmap is redrawn for the first chunk and then every FIGURE_EVERY seconds of audio, not every chunk.
    drawn_at = [t for t, _ in figures]
    assert drawn_at[0] == pytest.approx(0.1)
    assert all(0.999 * live_tab.FIGURE_EVERY <= b - a < live_tab.FIGURE_EVERY + 0.11 for a, b in zip(drawn_at, drawn_at[1:]))
    fig = figures[-1][1]
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


def test_live_tab_in_the_browser(app_server, fake_mic_wav):
    """Chromium's fake microphone plays speech into the Live tab: the stats, heatmap and transcript update
    while it records, and stopping ends the session."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_mic_wav}"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.grant_permissions(["microphone"])
            page = context.new_page()
            page.set_default_timeout(120_000)
            page.goto(app_server)
            page.get_by_role("tab", name="Live").click()
            # Gradio's streaming recorder registers its WAV encoder asynchronously when the tab first shows;
            # pressing Record before that fails in the browser ("MediaRecorder ... audio/wav is not
            # supported") and nothing is recorded. A person takes a moment too.
            page.wait_for_timeout(1500)
            stats = page.locator("#live-stats")
            assert "Waiting" in stats.inner_text()
            heard = "() => /heard \\*?\\*?[1-9]/.test(document.querySelector('#live-stats').innerText)"
            for attempt in (1, 2):
                # If the encoder was still not ready (a slow machine), a second press is allowed.
                page.get_by_role("button", name="Record", exact=True).filter(visible=True).click()
                try:
                    page.wait_for_function(heard, timeout=60_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    page.get_by_role("button", name="Stop", exact=True).filter(visible=True).click()
            first = stats.inner_text()
            page.wait_for_timeout(2500)
            later = stats.inner_text()
            assert later != first and "ms" in later            # it keeps updating while recording
            assert page.locator(".js-plotly-plot").filter(visible=True).count() >= 1
            page.get_by_role("button", name="Stop", exact=True).filter(visible=True).click()
            page.wait_for_function("() => document.querySelector('#live-stats').innerText.includes('stopped')")
            text = page.locator("#live-transcript textarea").input_value()
            assert isinstance(text, str)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser_live.png"), full_page=True)
        finally:
            browser.close()
