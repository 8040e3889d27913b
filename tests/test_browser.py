"""The page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, headless).

(a) upload a clip and wait for the transcript and every plot; (b) record through the microphone, which
Chromium fakes by playing a synthesized WAV file, then stop and wait for the transcript.
Full-page screenshots go to tests/artifacts/; with ASR_LAB_SCREENSHOTS=1 the upload one also replaces
assets/screenshots/analyse_quick_brown_fox.png (the README's picture; rerun it when new weights land).
"""
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from asr_core import pipeline, transcribe

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 300_000  # generous: a busy 2-core machine; nothing here asserts on time

# True once the analysis has finished (every plot drawn, no empty plot left) or an error toast is up.
ANALYSIS_DONE = """(minPlots) => {
  const shown = el => el.offsetParent !== null;
  if ([...document.querySelectorAll('.toast-body')].some(shown)) return true;
  const empty = [...document.querySelectorAll('[aria-label="Empty value"]')].filter(shown);
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(shown);
  return empty.length === 0 && plots.length >= minPlots && plots.every(p => p.querySelector('.main-svg'));
}"""


@pytest.fixture(scope="module")
def browser(fake_mic_wav):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={fake_mic_wav}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.grant_permissions(["microphone"])
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_server, timeout=WAIT_MS)
    page.wait_for_selector("#transcript textarea")
    yield page
    context.close()


def empty_plots(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('[aria-label="Empty value"]')]
                                  .filter(el => el.offsetParent !== null).length""")


def wait_for_analysis(page, min_plots: int):
    page.wait_for_function(ANALYSIS_DONE, arg=min_plots, timeout=WAIT_MS)
    toasts = page.locator(".toast-body").filter(visible=True)
    assert toasts.count() == 0, f"the page showed an error: {toasts.first.inner_text()}"


def screenshot(page, name: str):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_upload_shows_transcript_and_every_plot(page, speech_wav2):
    shipped = REPO / "assets" / "examples" / "quick_brown_fox.wav"
    clip = shipped if shipped.exists() else speech_wav2
    plots = empty_plots(page)  # the plots waiting for a clip on the first tab
    assert plots >= 1
    page.get_by_label("Upload file").click()
    page.locator("input[type=file]").first.set_input_files(str(clip))
    wait_for_analysis(page, plots)
    expected = transcribe.transcribe(str(clip), pipeline.default_model())["transcript"]
    assert page.locator("#transcript textarea").input_value() == expected  # the same event filled it
    assert page.locator("#info").inner_text().strip()  # the clip's duration, frames and model
    path = screenshot(page, "browser_upload.png")
    if os.environ.get("ASR_LAB_SCREENSHOTS"):
        (REPO / "assets" / "screenshots").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, REPO / "assets" / "screenshots" / "analyse_quick_brown_fox.png")


def test_microphone_recording_is_transcribed(page):
    plots = empty_plots(page)
    page.get_by_label("Record audio").click()  # the microphone source (already selected on a fresh page)
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3000)  # the fake microphone plays the synthesized clip
    page.get_by_role("button", name="Stop", exact=True).filter(visible=True).click()
    wait_for_analysis(page, plots)  # a silent or unreadable recording would have raised an error toast
    assert page.locator("#info").inner_text().strip()  # the recording's duration, frames and model
    screenshot(page, "browser_microphone.png")
