"""Bad and odd uploads, sent to the running app through gradio_client's /transcribe endpoint.

Every case must end in a transcript or in one clear message (a gr.Error, which gradio_client raises
as AppError with the message text) — never a traceback, never the server's file path, and the
server keeps serving. Nothing may be written outside temporary folders.
"""
from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from asr_core import audio

REPO = Path(__file__).resolve().parents[1]
RATE = audio.SAMPLE_RATE
MODEL = "rnn"   # the fastest model: these tests are about the audio, not the network
UPLOAD_LIMIT = 50 * 1024 * 1024


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


@pytest.fixture(scope="module")
def speech(make_speech) -> np.ndarray:
    """About two seconds of speech, 16 kHz float32 in [-0.5, 0.5]."""
    x = audio.load(str(make_speech("open the door and look at the garden"))).samples
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module", autouse=True)
def repo_untouched(app_server):
    """No file in the repository is created or changed while these uploads are handled."""
    def snapshot():
        skip = {".git", "__pycache__", ".pytest_cache", "artifacts"}
        return {p: p.stat().st_mtime_ns for p in REPO.rglob("*")
                if p.is_file() and not skip.intersection(p.relative_to(REPO).parts)}
    log = REPO / "tests" / "artifacts" / "server.log"
    log_start = log.stat().st_size if log.exists() else 0
    before = snapshot()
    yield
    after = snapshot()
    changed = sorted(str(p.relative_to(REPO)) for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, f"files written in the repository: {changed}"
    if log.exists():
        new_log = log.read_text(errors="replace")[log_start:]
        assert "Traceback" not in new_log, new_log[-3000:]


def serving(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status == 200


def transcribe(client, path: Path):
    """The endpoint's outputs: transcript first, then the clip's info line, then the panels."""
    return client.predict(handle_file(str(path)), MODEL, "greedy", api_name="/transcribe")


def rejected(client, app_server, path: Path) -> str:
    """Upload a file that must be refused; returns the message the user sees."""
    with pytest.raises(AppError) as e:
        transcribe(client, path)
    message = str(e.value)
    assert message and "Traceback" not in message and "Error(" not in message
    assert path.name not in message and "/tmp" not in message and "gradio" not in message.lower()
    assert serving(app_server)
    return message


def write(path: Path, data, rate: int = RATE, subtype: str | None = None) -> Path:
    sf.write(path, data, rate, subtype=subtype)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True, timeout=120)


# -- refused, with a message ------------------------------------------------------------------------

@pytest.mark.parametrize("name, make, expected", [
    ("empty.wav", lambda: np.zeros(0, np.float32), "empty"),
    ("50ms.wav", lambda: 0.3 * np.sin(np.arange(800) / 5).astype(np.float32), r"50 ms"),
    ("silence.wav", lambda: np.zeros(RATE, np.float32), "silent"),
])
def test_unusable_recordings(client, app_server, files, name, make, expected):
    message = rejected(client, app_server, write(files / name, make(), subtype="PCM_16"))
    assert re.search(expected, message), message


@pytest.mark.parametrize("name, content", [
    ("notes.wav", b"These are my lecture notes, not a recording.\n" * 20),
    ("picture.wav", None),  # a real PNG image, renamed
])
def test_files_that_are_not_audio(client, app_server, files, name, content):
    path = files / name
    if content is None:
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1", "-f", "image2", "-c:v", "png", str(path))
        assert path.read_bytes()[:4] == b"\x89PNG"
    else:
        path.write_bytes(content)
    assert "could not be read as audio" in rejected(client, app_server, path)


def test_truncated_header(client, app_server, files, speech):
    full = write(files / "full.wav", speech, subtype="PCM_16")
    cut = files / "cut_header.wav"
    cut.write_bytes(full.read_bytes()[:30])  # the RIFF header stops half-way
    assert "could not be read as audio" in rejected(client, app_server, cut)


def test_over_the_upload_limit(client, app_server, files):
    """gradio_client refuses before sending; a raw upload gets HTTP 413; the server carries on."""
    big = files / "big.wav"
    with open(big, "wb") as f:
        f.truncate(UPLOAD_LIMIT + 1024 * 1024)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        transcribe(client, big)
    import httpx
    with open(big, "rb") as f:
        r = httpx.post(app_server.rstrip("/") + "/gradio_api/upload", files={"files": ("big.wav", f)}, timeout=120)
    assert r.status_code == 413 and "maximum allowed size" in r.text
    assert serving(app_server)


# -- accepted: decoded, converted, analysed ---------------------------------------------------------

def close(a: str, b: str) -> bool:
    """Two transcripts of (nearly) the same audio: equal up to a few characters."""
    if not a and not b:
        return True
    return jiwer.cer(a or " ", b or " ") <= 0.15


@pytest.fixture(scope="module")
def reference(client, files, speech) -> str:
    return transcribe(client, write(files / "reference.wav", speech, subtype="FLOAT"))[0]


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_sample_rates(client, files, speech, rate):
    x = AF.resample(torch.from_numpy(speech), RATE, rate).numpy()
    out = transcribe(client, write(files / f"rate{rate}.wav", x, rate, "PCM_16"))
    assert isinstance(out[0], str)
    assert f"{rate:,} Hz (resampled to 16,000 Hz)" in out[1]


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_32", "FLOAT", "DOUBLE"])
def test_sample_formats(client, files, speech, reference, subtype):
    out = transcribe(client, write(files / f"{subtype}.wav", speech, subtype=subtype))
    assert close(out[0], reference), (out[0], reference)


def test_stereo_with_one_silent_channel(client, files, speech, reference):
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    out = transcribe(client, write(files / "stereo.wav", stereo, subtype="FLOAT"))
    assert out[0] == reference          # the silent channel is left out of the mix: same samples
    assert "2 channels (mixed to mono)" in out[1]


def test_dc_offset(client, files, speech, reference):
    out = transcribe(client, write(files / "dc.wav", speech + 0.3, subtype="FLOAT"))
    assert close(out[0], reference), (out[0], reference)


def test_heavy_clipping(client, files, speech):
    out = transcribe(client, write(files / "clipped.wav", np.clip(speech * 20, -1, 1), subtype="PCM_16"))
    assert isinstance(out[0], str) and "clipped" in out[1]


def test_white_noise(client, files):
    noise = 0.1 * np.random.default_rng(0).standard_normal(2 * RATE).astype(np.float32)
    out = transcribe(client, write(files / "noise.wav", noise, subtype="PCM_16"))
    assert isinstance(out[0], str) and "2.00 s" in out[1]


def test_nan_and_inf_samples(client, files, speech):
    x = speech.copy()
    x[100:200], x[5000], x[9000] = np.nan, np.inf, -np.inf
    out = transcribe(client, write(files / "nan.wav", x, subtype="FLOAT"))
    assert isinstance(out[0], str) and "NaN or infinite" in out[1]


def test_truncated_data(client, files, speech):
    """The header promises more samples than the file holds: what is there is analysed."""
    full = write(files / "full2.wav", speech, subtype="PCM_16")
    cut = files / "cut_data.wav"
    cut.write_bytes(full.read_bytes()[:len(full.read_bytes()) // 2])
    out = transcribe(client, cut)
    assert isinstance(out[0], str)
    shown = float(out[1].split("**")[1].split(" s")[0])
    assert 0.4 * len(speech) / RATE < shown < 0.6 * len(speech) / RATE


@pytest.mark.parametrize("kind", ["mp3", "webm", "video"])
def test_browser_and_compressed_formats(client, files, speech, kind):
    src = write(files / "src.wav", speech, subtype="PCM_16")
    if kind == "mp3":
        out_path = files / "clip.mp3"
        ffmpeg("-i", str(src), "-c:a", "libmp3lame", "-b:a", "64k", str(out_path))
    elif kind == "webm":  # what MediaRecorder makes in Chrome and Firefox: Opus in WebM, 48 kHz
        out_path = files / "clip.webm"
        ffmpeg("-i", str(src), "-c:a", "libopus", "-ar", "48000", "-b:a", "48k", str(out_path))
    else:                 # a phone video: test pattern picture plus the speech
        out_path = files / "clip.mp4"
        ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-i", str(src), "-shortest",
               "-c:v", "mpeg4", "-c:a", "aac", str(out_path))
    out = transcribe(client, out_path)
    assert isinstance(out[0], str)
    shown = float(out[1].split("**")[1].split(" s")[0])
    assert shown == pytest.approx(len(speech) / RATE, abs=0.15)
    # The decoder (the same code the server ran) recovers the speech itself, up to the codec's delay.
    assert similarity(audio.load(str(out_path)).samples, speech) > 0.8


def similarity(a: np.ndarray, b: np.ndarray, max_lag: int = RATE // 10) -> float:
    """Best normalized cross-correlation of two signals over lags up to max_lag samples."""
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    best = max(corr[:max_lag].max(), corr[-max_lag:].max())
    return float(best / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_ten_minute_recording(client, files, speech):
    """A long upload is analysed whole (in chunks); the views show a window of it."""
    gap = np.zeros(RATE // 2, np.float32)
    one = np.concatenate([speech, gap])
    x = np.tile(one, int(np.ceil(600 * RATE / len(one))))[:600 * RATE]
    out = transcribe(client, write(files / "ten_minutes.wav", x, subtype="PCM_16"))
    assert isinstance(out[0], str)
    assert "**600.00 s**" in out[1] and "60001 frames" in out[1]
    assert "window start" in out[1]
