"""Shared fixtures: synthesized speech clips, the shipped examples, free ports and a running app server.

Every clip here is made on the spot with espeak-ng or flite (no data set is needed), so the tests run on a
fresh clone with only the apt packages of .ci/run installed.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from asr_core import audio, examples
from asr_core.app_process import free_port, stop, wait_until_answers

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
EXAMPLES_DIR = ASSETS / "examples"
ARTIFACTS = REPO / "tests" / "artifacts"   # screenshots and server logs (gitignored)

SERVER_START_TIMEOUT_S = 300  # importing torch and gradio on a busy 2-core machine can be slow


def synthesize(text: str, out: Path, voice: str = "espeak:en-us") -> Path:
    """Speak `text` into the WAV file `out` with espeak-ng ("espeak:<voice>") or flite ("flite:<voice>")."""
    engine, name = voice.split(":", 1)
    if engine == "espeak":
        cmd = ["espeak-ng", "-v", name, "-s", "150", "-w", str(out), text]
    else:
        cmd = ["flite", "-voice", name, "-t", text, "-o", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def make_speech(clip_dir):
    """Factory: make_speech(text, voice="espeak:en-us") -> path of a synthesized WAV (made once per session)."""
    made: dict[tuple[str, str], Path] = {}

    def make(text: str, voice: str = "espeak:en-us") -> Path:
        if (text, voice) not in made:
            made[(text, voice)] = synthesize(text, clip_dir / f"speech{len(made)}.wav", voice)
        return made[(text, voice)]

    return make


@pytest.fixture(scope="session")
def speech_wav(make_speech) -> Path:
    """About two seconds of espeak-ng speech, as espeak writes it (22.05 kHz, 16-bit mono)."""
    return make_speech("hello world, this is a test of the speech lab")


@pytest.fixture(scope="session")
def speech_wav2(make_speech) -> Path:
    """A second clip with a different engine, voice and text."""
    return make_speech("the quick brown fox jumps over the lazy dog", "flite:kal16")


@pytest.fixture(scope="session")
def speech_clip(speech_wav):
    """speech_wav decoded and prepared by the app's audio stage (16 kHz mono float32)."""
    return audio.load(str(speech_wav))


@pytest.fixture(scope="session")
def example_wavs(speech_wav, speech_wav2) -> list[Path]:
    """The shipped example clips (assets/examples), or two synthesized ones if there are none."""
    shipped = sorted(EXAMPLES_DIR.glob("*.wav"))
    return shipped or [speech_wav, speech_wav2]


@pytest.fixture(scope="session")
def fake_mic_wav(clip_dir) -> Path:
    """A clip for Chromium's fake microphone: 16-bit PCM WAV at 48 kHz, with a second of silence
    after the speech (the fake device loops the file)."""
    raw = synthesize("hello world, the network is listening", clip_dir / "mic_raw.wav")
    clip = audio.load(str(raw))
    wave = AF.resample(torch.from_numpy(clip.samples), audio.SAMPLE_RATE, 48_000).numpy()
    wave = np.concatenate([wave, np.zeros(48_000, dtype=np.float32)])
    out = clip_dir / "fake_mic.wav"
    sf.write(out, 0.8 * wave / np.abs(wave).max(), 48_000, subtype="PCM_16")
    return out


@pytest.fixture(name="free_port")
def free_port_fixture() -> int:
    return free_port()


def _wait_for_example_cache(log_path: Path, timeout_s: float = 90.0) -> None:
    """Gradio fills the example cache in the background just after the server answers; wait for it, so
    that tests watching the repository's files (test_bad_inputs) see only what a request writes.
    A server that finds a complete cache only reads it and prints no "Caching examples" line."""
    start = time.time()
    while time.time() - start < timeout_s:
        found = re.search(r"Caching examples at: '([^']+)'", log_path.read_text())
        if found and examples.cached_count(Path(found.group(1)).parent) >= len(examples.listing()):
            time.sleep(0.5)  # its last CSV rows
            return
        if not found and time.time() - start > 3:
            return
        time.sleep(0.2)


@pytest.fixture(scope="session")
def app_server():
    """`python app.py` on a free port, as a subprocess; yields its URL and stops it after the session.

    The server's output goes to tests/artifacts/server.log (shown in the failure if it does not start).
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    log_path = ARTIFACTS / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_until_answers(url, proc, SERVER_START_TIMEOUT_S):
            tail = log_path.read_text()[-3000:]
            pytest.fail(f"app.py did not start (exit code {proc.poll()}); log tail:\n{tail}")
        _wait_for_example_cache(log_path)
        yield url
    finally:
        stop(proc)
