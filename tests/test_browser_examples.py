"""The cached examples in a real browser (Playwright + Debian's Chromium, headless).

A click shows Gradio's cached outputs, computed with the model and decoder the row also sets; they must be
what a live /transcribe of the same clip with that model gives, and the teaching tabs (which read the
`analysis` state, never cached) must get the clicked clip too. Nothing here asserts on time.
"""
import os

import pytest
from gradio_client import Client, handle_file
from playwright.sync_api import sync_playwright

from asr_core import examples, pipeline, views

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = int(os.environ.get("WAIT_MS", 300_000))  # generous: a busy 2-core machine
TRANSCRIPT = "#transcript textarea"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(app_server, timeout=WAIT_MS)
    page.wait_for_selector(TRANSCRIPT)
    yield page
    context.close()


@pytest.fixture(scope="module")
def live(app_server):
    """transcript of (clip, model) from the running server's /transcribe."""
    client = Client(app_server, verbose=False, analytics_enabled=False, download_files=False)
    return lambda clip, model: client.predict(handle_file(str(clip)), model, "greedy", api_name="/transcribe")[0]


def pick_model(page, name: str):
    page.get_by_label("Model").click()
    page.get_by_role("option", name=views.model_label(name)).click()


def wait_for_transcript(page) -> str:
    page.wait_for_function("(sel) => document.querySelector(sel).value !== ''", arg=TRANSCRIPT)
    toasts = page.locator(".toast-body").filter(visible=True)
    assert toasts.count() == 0, f"the page showed an error: {toasts.first.inner_text()}"
    return page.locator(TRANSCRIPT).input_value()


def test_example_click_shows_the_live_transcript_and_fills_the_teaching_tabs(page, live):
    ex = next(e for e in examples.listing() if e.name == "quick_brown_fox")
    best, other = pipeline.default_model(), next(n for n in ("rnn", "gru", "lstm") if n != pipeline.default_model())
    pick_model(page, other)  # the row sets the model its cached outputs were made with
    page.get_by_role("button", name=f"“{ex.text}”").click()
    shown = wait_for_transcript(page)
    assert shown == live(ex.path, best)  # the cached transcript is the live one
    assert page.get_by_label("Model").input_value() == views.model_label(best)
    assert page.get_by_label("greedy").is_checked()
    assert f"model {best}" in page.locator("#info").inner_text()

    # the stepper reads `analysis`: it must be the clicked clip (its frame count), not "load a clip first"
    page.get_by_role("tab", name="Inside the RNN", exact=True).click()
    frames = pipeline.transcribe_file(str(ex.path)).frames
    page.wait_for_function("(n) => document.querySelector('#tab-inside').innerText.includes('of ' + n + ' (')",
                           arg=frames)
    page.get_by_role("tab", name="Listen & analyse", exact=True).click()

    # the user's own model choice still re-analyses the clip that the example loaded
    pick_model(page, other)
    page.wait_for_function("(m) => document.querySelector('#info').innerText.includes(m)", arg=f"model {other}")
    assert page.locator(TRANSCRIPT).input_value() == live(ex.path, other)
