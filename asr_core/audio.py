"""Stage 1 — audio: decode any clip, downmix to mono, resample to 16 kHz float32.

Decoding is owned here (not left to Gradio) so that every failure carries a clear message.
soundfile reads wav/flac/ogg/opus; anything else goes through the ffmpeg program, fed the
file path as one argument (never through a shell).
"""
from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16_000
MIN_SECONDS = 0.1        # shorter than this is too short to hear anything
SILENCE_RMS = 1e-4       # below this RMS (full scale = 1.0) a clip counts as silent
CLIPPED_SHARE = 0.002    # more samples than this share sitting at the peak: flat tops, a clipped recording
MAX_SECONDS = 20 * 60    # longest clip accepted (long clips are analysed in chunks, see longform.py)
FFMPEG_TIMEOUT_S = 60


class AudioError(ValueError):
    """A clip that cannot be analysed; the message is written for the person who gave it."""


@dataclass
class Clip:
    """16 kHz mono float32 samples plus what was noticed while preparing them."""
    samples: np.ndarray
    original_rate: int
    original_channels: int
    notes: list[str]

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


def _to_float(data: np.ndarray) -> np.ndarray:
    """Integer PCM to [-1, 1] floats; float input is kept as it is."""
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        scale = max(abs(info.min), info.max)
        data = data.astype(np.float64) / scale
        if info.min == 0:  # unsigned 8-bit
            data = data * 2 - 1
    return np.asarray(data, dtype=np.float64)


def _decode_ffmpeg(path: str) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError("This file type needs ffmpeg, which is not installed; please upload WAV, FLAC or OGG.")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-vn", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-t", str(MAX_SECONDS + 1), "-f", "f32le", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise AudioError("Decoding this file took too long; please upload a shorter clip.") from e
    data = np.frombuffer(out.stdout, dtype=np.float32)
    if out.returncode != 0 or data.size == 0:
        raise AudioError("This file could not be read as audio. Please upload a WAV, FLAC, OGG, MP3, WebM or M4A recording.")
    return data, SAMPLE_RATE


@functools.lru_cache(maxsize=16)
def resampler(orig: int, new: int = SAMPLE_RATE) -> torchaudio.transforms.Resample:
    """torchaudio's windowed-sinc resampler, its kernel computed once per pair of rates (not per clip)."""
    return torchaudio.transforms.Resample(orig, new)


def _too_long(seconds: float) -> AudioError:
    return AudioError(f"The clip is {seconds / 60:.1f} minutes long; the limit is {MAX_SECONDS // 60} minutes. "
                      "Please upload a shorter recording.")


def read_file(path: str) -> tuple[np.ndarray, int]:
    """Decode a file to (samples, rate); samples are (n,) or (n, channels)."""
    try:
        info = sf.info(path)
    except Exception:  # not a format libsndfile knows, or a broken file: let ffmpeg try
        return _decode_ffmpeg(path)
    if info.samplerate > 0 and info.frames / info.samplerate > MAX_SECONDS:
        raise _too_long(info.frames / info.samplerate)  # checked before anything is read into memory
    try:
        return sf.read(path, always_2d=False)
    except Exception:
        return _decode_ffmpeg(path)


def _clipped(data: np.ndarray) -> bool:
    peak = float(np.abs(data).max())
    at_peak = int(np.count_nonzero(np.abs(data) >= 0.999 * peak))
    return peak > 0 and at_peak >= max(10, CLIPPED_SHARE * len(data))


def prepare(data, rate: int) -> Clip:
    """Any samples at any rate (mono or (n, channels) / (channels, n)) to a checked 16 kHz mono Clip."""
    data = np.asarray(data)
    if data.size == 0:
        raise AudioError("The recording is empty. Record again, or upload a clip with speech in it.")
    if data.ndim == 2 and data.shape[0] < data.shape[1] and data.shape[0] <= 8:
        data = data.T  # (channels, n) -> (n, channels)
    channels = 1 if data.ndim == 1 else data.shape[1]
    data = _to_float(data)
    notes = []
    if not np.all(np.isfinite(data)):
        data = np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)
        notes.append("The file contained NaN or infinite samples; they were replaced.")
    if data.ndim == 2:
        # Average only channels with signal, so a silent channel does not halve the level.
        rms = np.sqrt(np.mean(data**2, axis=0))
        live = rms > SILENCE_RMS
        data = data[:, live].mean(axis=1) if live.any() else data.mean(axis=1)
    if rate <= 0:
        raise AudioError("The file reports an invalid sample rate.")
    if len(data) / rate > MAX_SECONDS:
        raise _too_long(len(data) / rate)
    if len(data) / rate < MIN_SECONDS:
        raise AudioError(f"The clip is only {1000 * len(data) / rate:.0f} ms long; please record at least half a second.")
    if _clipped(data):
        notes.append("The recording is clipped (too loud: its peaks are cut flat), which blurs the sounds; "
                     "lower the input level or move away from the microphone.")
    data = data - data.mean()  # remove any DC offset
    wave = torch.from_numpy(data.astype(np.float32))
    if rate != SAMPLE_RATE:
        wave = resampler(rate)(wave)
    samples = wave.numpy()
    if float(np.sqrt(np.mean(samples**2))) < SILENCE_RMS:
        raise AudioError("The clip is silent. Check that the microphone is on, then try again.")
    peak = float(np.abs(samples).max())
    if peak > 1.0:
        samples = samples / peak
    return Clip(samples.astype(np.float32), rate, channels, notes)


def load(path: str) -> Clip:
    """Decode and prepare a file."""
    data, rate = read_file(path)
    return prepare(data, rate)
