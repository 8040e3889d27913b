"""Stage 2 — features: 40 MFCCs every 10 ms (25 ms window), normalized per utterance.

A 10 s clip becomes a (T, 40) matrix with T ≈ 1000: the sequence x_1..x_T the RNN reads.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE

N_MFCC = 40
WIN_LENGTH = 400   # 25 ms at 16 kHz
HOP_LENGTH = 160   # 10 ms at 16 kHz -> 100 frames per second
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH


@functools.lru_cache(maxsize=1)
def mfcc_transform() -> torchaudio.transforms.MFCC:
    """Built once per process (the mel filterbank and DCT matrix are reused)."""
    return torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=N_MFCC,
        melkwargs={"n_fft": 512, "win_length": WIN_LENGTH, "hop_length": HOP_LENGTH,
                   "n_mels": 64, "f_min": 20.0, "f_max": 7600.0, "center": True},
    )


def normalize(feats: torch.Tensor) -> torch.Tensor:
    """Per-utterance mean and variance normalization of each coefficient over time."""
    mean = feats.mean(dim=-2, keepdim=True)
    std = feats.std(dim=-2, keepdim=True) if feats.shape[-2] > 1 else torch.ones_like(mean)
    return (feats - mean) / (std + 1e-5)


@torch.no_grad()
def mfcc(samples, transform: torchaudio.transforms.MFCC | None = None) -> torch.Tensor:
    """16 kHz mono samples -> (T, 40) normalized MFCC frames (float32); `transform` replaces mfcc_transform()
    (augment.vtlp_mfcc passes one with a warped filterbank)."""
    wave = torch.as_tensor(np.asarray(samples, dtype=np.float32))
    feats = (transform or mfcc_transform())(wave).transpose(0, 1)  # (n_mfcc, T) -> (T, n_mfcc)
    return normalize(feats).contiguous()


def frame_times(num_frames: int) -> np.ndarray:
    """Centre time in seconds of each frame."""
    return np.arange(num_frames) / FRAMES_PER_SECOND
