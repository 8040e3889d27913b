"""The page in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, headless).

(a) upload a clip and wait for the transcript and every plot; (b) record through the microphone, which
Chromium fakes by playing a synthesized WAV file, then stop and wait for the transcript; (c) play the clip
and watch the cursor cross the plots, click the plots and watch the player seek; (d) visit every tab.
Screenshots go to tests/artifacts/ (one per tab, tab_<id>.png); with ASR_LAB_SCREENSHOTS=1 the README's
pictures in assets/screenshots/ are replaced too (rerun it when new weights land).
"""
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from asr_core import audio, examples, features, pipeline, transcribe
from asr_core.vocab import LABELS, normalize_text

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
README_SHOTS = REPO / "assets" / "screenshots"
UPDATE_README_SHOTS = bool(os.environ.get("ASR_LAB_SCREENSHOTS"))

CHROMIUM = "/usr/bin/chromium"
WAIT_MS = int(os.environ.get("WAIT_MS", 300_000))  # generous: a busy 2-core machine; nothing here asserts on time

# True once the visible page has finished drawing (every visible plot drawn, no empty plot left, at least
# minPlots of them) or an error toast is up. Plots on tabs that are not selected are not visible.
DRAWN = """(minPlots) => {
  const shown = el => el.offsetParent !== null;
  if ([...document.querySelectorAll('.toast-body')].some(shown)) return true;
  const empty = [...document.querySelectorAll('[aria-label="Empty value"]')].filter(shown);
  const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(shown);
  return empty.length === 0 && plots.length >= minPlots && plots.every(p => p.querySelector('.main-svg'));
}"""

# The player of the first tab, and where the cursor line (views.PLAYHEAD_JS) stands on each time-aligned plot
# (x in frames; null while it is not shown).
PLAYER = "document.querySelector('#clip-audio audio')"
CURSORS = """() => ['#waveform-plot', '#mfcc-plot', '#softmax-plot'].map(id => {
  const line = document.querySelector(id + ' .playhead');
  return line && !line.hidden ? Number(line.dataset.x) : null;
})"""


@pytest.fixture(scope="module")
def browser(fake_mic_wav):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",  # the test presses play from a script
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


@pytest.fixture(scope="module")
def example(speech_wav2):
    """A shipped example and what it says (or a synthesized clip, on a checkout without examples)."""
    for ex in examples.listing():
        if ex.name == "quick_brown_fox" and ex.path.exists():
            return ex.path, ex.text
    return speech_wav2, "the quick brown fox jumps over the lazy dog"


def empty_plots(page) -> int:
    return page.evaluate("""() => [...document.querySelectorAll('[aria-label="Empty value"]')]
                                  .filter(el => el.offsetParent !== null).length""")


def wait_until_drawn(page, min_plots: int):
    page.wait_for_function(DRAWN, arg=min_plots, timeout=WAIT_MS)
    toasts = page.locator(".toast-body").filter(visible=True)
    assert toasts.count() == 0, f"the page showed an error: {toasts.first.inner_text()}"


def visible_plots(page) -> int:
    return page.evaluate("() => [...document.querySelectorAll('.js-plotly-plot')]"
                         ".filter(p => p.offsetParent !== null && p.querySelector('.main-svg')).length")


def screenshot(page, name: str, between: tuple[str, str] | None = None) -> Path:
    """The whole page, or the stretch of it from the top of one element to the bottom of another."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    clip = None
    if between:
        top, bottom = (page.locator(sel).bounding_box() for sel in between)
        scroll = page.evaluate("() => window.scrollY")  # bounding boxes are relative to the viewport
        clip = dict(x=top["x"], y=top["y"] + scroll, width=top["width"],
                    height=bottom["y"] + bottom["height"] - top["y"])
    page.screenshot(path=str(path), full_page=True, clip=clip)
    return path


def for_readme(path: Path, name: str):
    if UPDATE_README_SHOTS:
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, README_SHOTS / name)


def upload(page, clip: Path):
    plots = empty_plots(page)  # the plots waiting for a clip on the first tab
    assert plots >= 1
    page.get_by_label("Upload file").click()
    page.locator("input[type=file]").first.set_input_files(str(clip))
    wait_until_drawn(page, plots)


def open_tab(page, name: str, min_plots: int | None = None):
    """Select a tab; with min_plots, wait until it shows at least that many plots and no empty one."""
    page.get_by_role("tab", name=name, exact=True).click()
    if min_plots is not None:
        wait_until_drawn(page, min_plots)


def test_upload_shows_transcript_and_every_plot(page, example):
    clip, _ = example
    upload(page, clip)
    expected = transcribe.transcribe(str(clip), pipeline.default_model())["transcript"]
    assert page.locator("#transcript textarea").input_value() == expected  # the same event filled it
    assert page.locator("#info").inner_text().strip()  # the clip's duration, frames and model
    for_readme(screenshot(page, "browser_upload.png"), "analyse_quick_brown_fox.png")


def test_microphone_recording_is_transcribed(page):
    plots = empty_plots(page)
    page.get_by_label("Record audio").click()  # the microphone source (already selected on a fresh page)
    page.get_by_role("button", name="Record", exact=True).click()
    page.wait_for_timeout(3000)  # the fake microphone plays the synthesized clip
    page.get_by_role("button", name="Stop", exact=True).filter(visible=True).click()
    wait_until_drawn(page, plots)  # a silent or unreadable recording would have raised an error toast
    assert page.locator("#info").inner_text().strip()  # the recording's duration, frames and model
    screenshot(page, "browser_microphone.png")


def test_playing_moves_the_cursor_and_clicking_seeks(page, example):
    clip, _ = example
    frames = features.mfcc(audio.load(str(clip)).samples).shape[0]  # the plots' x axis: frames -0.5 .. T-0.5
    upload(page, clip)
    page.wait_for_function(f"() => {PLAYER}.readyState >= 1")  # the player knows the clip's duration
    assert page.evaluate(f"() => {PLAYER}.duration") == pytest.approx(frames / features.FRAMES_PER_SECOND,
                                                                      abs=0.02)
    page.wait_for_function(f"() => ({CURSORS})().every(x => x === 0)")  # a cursor at 0 s on every plot

    # play: every cursor moves right, and keeps moving
    page.evaluate(f"() => {PLAYER}.play()")
    page.wait_for_function(f"() => ({CURSORS})().every(x => x > 20)")  # past 0.2 s
    first = page.evaluate(CURSORS)
    page.wait_for_function(f"(first) => ({CURSORS})().every((x, i) => x > first[i] + 20)", arg=first)
    page.evaluate(f"() => {PLAYER}.pause()")
    now = page.evaluate(f"() => {PLAYER}.currentTime")
    page.wait_for_function(  # paused: the cursors stop where the player is
        f"(x) => ({CURSORS})().every(c => Math.abs(c - x) < 0.2)", arg=now * features.FRAMES_PER_SECOND)
    assert page.locator("#ctc-collapse .ctc-path .now").count() == 1  # the CTC path marks that frame too

    # click a plot: the player jumps to the time under the pointer
    for plot, fraction in (("#mfcc-plot", 0.5), ("#waveform-plot", 0.25), ("#softmax-plot", 0.8)):
        page.locator(plot).scroll_into_view_if_needed()
        area = page.locator(f"{plot} .nsewdrag").bounding_box()  # the plot's data area
        where = area["x"] + fraction * area["width"]
        page.mouse.click(where, area["y"] + 0.5 * area["height"])
        seconds = (-0.5 + fraction * frames) / features.FRAMES_PER_SECOND
        pixel = frames / area["width"] / features.FRAMES_PER_SECOND  # seconds per pixel (the mouse lands on whole pixels)
        page.wait_for_function(f"([t, tol]) => Math.abs({PLAYER}.currentTime - t) < tol", arg=[seconds, 1.5 * pixel])
        page.wait_for_function(f"() => ({CURSORS})().every(c => Math.abs(c - 100 * {PLAYER}.currentTime) < 0.01)")
        line = page.locator(f"{plot} .playhead").bounding_box()
        assert line["x"] + line["width"] / 2 == pytest.approx(where, abs=2)  # drawn where the click was

    # click a frame of the CTC path: the player jumps to that frame
    page.locator("#ctc-collapse .ctc-path .g > span").nth(42).click()
    page.wait_for_function(f"() => Math.abs({PLAYER}.currentTime - 0.42) < 0.001")
    screenshot(page, "browser_playhead.png")


def test_every_tab_shows_its_content(page, example):
    """Each tab, on the shipped example: its real content drawn, a screenshot of each (tab_<id>.png)."""
    clip, reference = example
    upload(page, clip)
    screenshot(page, "tab_analyse.png")

    # Inside the RNN: step to the frame of the middle half where the textbook RNN is surest of a letter
    a = pipeline.transcribe_file(str(clip), "rnn")
    middle = range(a.frames // 4, 3 * a.frames // 4)
    t = max(middle, key=lambda t: a.probs[t, LABELS.index("a"):].max())
    open_tab(page, "Inside the RNN", 5)  # unrolled chain, state strips, outputs, PCA path, gates
    step = page.locator("#step input[type=number]")
    step.fill(str(t))
    step.press("Enter")
    page.wait_for_function("(t) => document.querySelector('#tab-inside').innerText.includes('Step t = ' + t + ' ')",
                           arg=t)  # the update at step t, written out with its numbers
    wait_until_drawn(page, 5)
    screenshot(page, "tab_inside.png")
    for_readme(screenshot(page, "stepper.png", between=("#tab-inside", "#step-output")), "stepper.png")

    # Reference & CTC: align what the example says
    open_tab(page, "Reference & CTC")  # its plot stays empty until a reference is aligned
    page.locator("#reference textarea").fill(reference)
    page.get_by_role("button", name="Align", exact=True).click()
    page.wait_for_selector("#alignment-plot .main-svg")
    words = page.locator('#aligned-words [role=gridcell][data-col="0"]')  # the table's word column
    words.first.wait_for()
    assert [w.strip() for w in words.all_inner_texts()] == normalize_text(reference).split()
    assert "−log P" in page.locator("#tab-ctc").inner_text()  # the CTC loss of the reference
    page.locator('#beam-table [role=gridcell][data-col="0"]').first.wait_for()  # greedy vs beam, filled on select
    assert page.locator(".toast-body").filter(visible=True).count() == 0
    screenshot(page, "tab_ctc.png")
    for_readme(screenshot(page, "alignment.png", between=("#tab-ctc", "#alignment-plot")), "alignment.png")

    # Vanishing gradients: measured on the clip for every shipped model, with a one-line reading
    open_tab(page, "Vanishing gradients", 1)
    assert "before the last step, the gradient reaching the input is" in page.locator("#tab-gradients").inner_text()
    screenshot(page, "tab_gradients.png")

    # Order matters: "cat" and "act" side by side
    open_tab(page, "Order matters")  # its shuffle plot stays empty until Shuffle is pressed
    page.wait_for_selector("#order-plot .main-svg")
    assert "cat" in page.locator("#tab-order").inner_text()
    screenshot(page, "tab_order.png")

    # Lesson: one live figure per step of the chapter
    open_tab(page, "Lesson", 6)
    assert "Working on your clip" in page.locator("#tab-lesson").inner_text()
    assert page.locator("#tab-lesson .ctc-card").count() == 1  # the CTC collapse of step 5
    screenshot(page, "tab_lesson.png")

    # Live: the microphone and the (still empty) heat map of what the model hears
    open_tab(page, "Live", 1)
    assert page.locator("#live-stats").inner_text().strip()
    assert page.get_by_role("button", name="Record", exact=True).filter(visible=True).count() == 1
    screenshot(page, "tab_live.png")
