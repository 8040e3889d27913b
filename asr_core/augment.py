"""Augmentation that makes browser and phone recordings look like training data.

Waveform level (16 kHz float32 numpy in, same out): speed perturbation, gain, additive noise at an
SNR, simulated room reverberation, phone-band limiting. Feature level: vocal tract length perturbation
(VTLP: MFCCs through a frequency-warped mel filterbank) and SpecAugment masks (torchaudio).
"""
from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T

from . import features
from .audio import SAMPLE_RATE


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play faster (factor > 1) or slower: resample and treat as 16 kHz (pitch moves too, as in Kaldi)."""
    return AF.resample(torch.from_numpy(x), int(SAMPLE_RATE * factor), SAMPLE_RATE).numpy()


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White or brown-ish noise at the given signal-to-noise ratio."""
    noise = rng.standard_normal(len(x)).astype(np.float32)
    if rng.random() < 0.5:  # low-frequency heavy noise, like fans and traffic
        noise = np.cumsum(noise)
        noise -= np.convolve(noise, np.ones(400) / 400, mode="same")
    return AF.add_noise(torch.from_numpy(x)[None], torch.from_numpy(noise.astype(np.float32))[None],
                        torch.tensor([snr_db]))[0].numpy()


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a synthetic room impulse response: exponentially decaying noise (RT60 0.2-0.8 s)."""
    rt60 = rng.uniform(0.2, 0.8)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0 / max(rng.uniform(0.3, 1.0), 1e-3)  # the direct path
    rir = torch.from_numpy((rir / np.linalg.norm(rir)).astype(np.float32))
    y = AF.fftconvolve(torch.from_numpy(x), rir)[: len(x)].numpy()
    return y / (np.abs(y).max() + 1e-8) * np.abs(x).max()


def phone_band(x: np.ndarray) -> np.ndarray:
    """Down to 8 kHz and back: loses everything above 4 kHz, like a telephone."""
    w = torch.from_numpy(x)
    return AF.resample(AF.resample(w, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE).numpy()


def random_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random chain of the above; every copy differs."""
    y = speed(x, rng.choice([0.9, 0.95, 1.05, 1.1]))
    if rng.random() < 0.4:
        y = reverb(y, rng)
    if rng.random() < 0.25:
        y = phone_band(y)
    if rng.random() < 0.7:
        y = add_noise(y, rng.uniform(5, 30), rng)
    return (y * rng.uniform(0.2, 1.0) / (np.abs(y).max() + 1e-8)).astype(np.float32)


VTLP_BOUNDARY_HZ = 4800.0  # below it the warp is f -> alpha * f; above, a straight line keeps Nyquist fixed


def warp_frequencies(freqs: np.ndarray, alpha: float, boundary: float = VTLP_BOUNDARY_HZ) -> np.ndarray:
    """VTLP's piecewise-linear frequency warp (Jaitly & Hinton 2013): a formant at f moves
    to alpha * f (alpha > 1: a shorter vocal tract, like a child's), and the top of the band stays put."""
    nyquist = SAMPLE_RATE / 2
    knee = boundary * min(alpha, 1.0) / alpha
    freqs = np.asarray(freqs, dtype=np.float64)
    upper = nyquist - (nyquist - boundary * min(alpha, 1.0)) / (nyquist - knee) * (nyquist - freqs)
    return np.where(freqs <= knee, alpha * freqs, upper)


@functools.lru_cache(maxsize=64)
def _warped_mfcc(alpha: float) -> torch.nn.Module:
    """features.mfcc_transform with its mel filterbank read at warped frequencies: FFT bin k, at f_k,
    feeds the filters that f_k would feed after the warp."""
    t = copy.deepcopy(features.mfcc_transform())
    fb = t.MelSpectrogram.mel_scale.fb  # (n_freqs, n_mels)
    freqs = np.linspace(0, SAMPLE_RATE / 2, fb.shape[0])
    warped = warp_frequencies(freqs, alpha)
    rows = [np.interp(warped, freqs, fb[:, m].numpy()) for m in range(fb.shape[1])]
    fb.copy_(torch.from_numpy(np.stack(rows, axis=1)).to(fb.dtype))
    return t


def vtlp_filterbanks(alphas: torch.Tensor) -> torch.Tensor:
    """The warped mel filterbanks (B, n_freqs, n_mels) for B warp factors (each rounded to 0.01), on
    alphas' device: what asr_core.onthefly multiplies each clip's power spectrum by."""
    banks = {a: (features.mfcc_transform() if a == 1.0 else _warped_mfcc(a)).MelSpectrogram.mel_scale.fb
             for a in {round(float(a), 2) for a in alphas.tolist()}}
    return torch.stack([banks[round(float(a), 2)] for a in alphas.tolist()]).to(alphas.device)


def vtlp_mfcc(x: np.ndarray, alpha: float) -> torch.Tensor:
    """features.mfcc with the speaker's vocal tract made 1/alpha as long (alpha rounded to 0.01)."""
    alpha = round(float(alpha), 2)
    return features.mfcc(x, None if alpha == 1.0 else _warped_mfcc(alpha))


class SpecAugment(torch.nn.Module):
    """Frequency and time masks on (T, 40) features (torchaudio's masking transforms)."""

    def __init__(self, freq_mask: int = 8, time_mask: int = 30, n_time_masks: int = 2):
        super().__init__()
        self.freq = T.FrequencyMasking(freq_mask)
        self.time = T.TimeMasking(time_mask, p=0.2)
        self.n_time_masks = n_time_masks

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        x = feats.T[None]  # (1, 40, T): the layout torchaudio's masks expect
        x = self.freq(x)
        for _ in range(self.n_time_masks):
            x = self.time(x)
        return x[0].T
