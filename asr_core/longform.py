"""Long recordings: features and model outputs computed in chunks, so memory stays bounded.

A 10-minute clip is 60 000 frames. Computing its STFT or running the network over it in one go
holds every intermediate of the whole recording at once; here both stages walk over it in
chunks of CHUNK_SECONDS and the pieces are joined by frame index:

- MFCC: each chunk is cut from the samples with a margin of MARGIN_FRAMES hops on each side, so
  every kept frame sees exactly the 25 ms window it would see in a whole-clip pass; the edge
  frames are dropped. The per-utterance normalization then uses statistics of the whole clip.
- Model: a causal (unidirectional) network carries its hidden state from one chunk to the next,
  which is the same computation as one pass. A bidirectional network reads each chunk with
  CONTEXT_SECONDS of extra frames on both sides and keeps only the chunk's own frames.

Every frame is owned by exactly one chunk and CTC decoding runs once over the joined (T, 29)
outputs, so no character is lost or doubled at a seam.

The views cannot draw 60 000 frames usefully: `window` cuts an Analysis down to the stretch
the page shows (VIEW_SECONDS from a start the user picks).
"""
from __future__ import annotations

import numpy as np
import torch

from . import ctc, features, models
from .audio import SAMPLE_RATE, Clip

LONG_SECONDS = 30.0      # longer clips are computed chunk by chunk
CHUNK_SECONDS = 20.0
CONTEXT_SECONDS = 2.0    # extra frames a bidirectional model sees on each side of a chunk
VIEW_SECONDS = 30.0      # the detailed views show at most this much of a clip
MARGIN_FRAMES = 2        # 2 hops = 320 samples > half the 512-sample FFT window

FPS = int(features.FRAMES_PER_SECOND)
HOP = features.HOP_LENGTH


def num_frames(num_samples: int) -> int:
    """Frames of a centred STFT: one every hop, the first centred on sample 0."""
    return 1 + num_samples // HOP


@torch.no_grad()
def raw_mfcc(samples: np.ndarray, chunk_seconds: float = CHUNK_SECONDS) -> torch.Tensor:
    """(T, 40) un-normalized MFCCs of the whole clip; the STFT and mel filterbank run chunk by chunk.

    The steps after the mel filterbank (dB with its 80 dB floor below the clip's loudest value,
    then the DCT) are cheap and need the whole clip's maximum, so they run once on all frames.
    """
    samples = np.asarray(samples, dtype=np.float32)
    transform = features.mfcc_transform()
    total = num_frames(len(samples))
    step = int(chunk_seconds * FPS)
    pieces = []
    for f0 in range(0, total, step):
        f1 = min(f0 + step, total)
        a = max(0, (f0 - MARGIN_FRAMES) * HOP)               # a is a whole number of hops
        b = min(len(samples), (f1 - 1 + MARGIN_FRAMES) * HOP + 1)
        mel = transform.MelSpectrogram(torch.from_numpy(samples[a:b]))  # frame j centred on a + j * HOP
        j0 = f0 - a // HOP
        pieces.append(mel[:, j0:j0 + (f1 - f0)])
    mel_db = transform.amplitude_to_DB(torch.cat(pieces, dim=1))      # (n_mels, T)
    return mel_db.T @ transform.dct_mat                              # (T, n_mfcc)


def mfcc(samples: np.ndarray, chunk_seconds: float = CHUNK_SECONDS) -> torch.Tensor:
    """Same frames as features.mfcc (normalized over the whole clip), in bounded memory."""
    return features.normalize(raw_mfcc(samples, chunk_seconds)).contiguous()


def is_causal(model: torch.nn.Module) -> bool:
    return not getattr(model.rnn, "bidirectional", False)


@torch.inference_mode()
def run_model(model_name: str, feats: torch.Tensor, chunk_seconds: float = CHUNK_SECONDS,
              context_seconds: float = CONTEXT_SECONDS) -> np.ndarray:
    """(T, 40) features -> (T, 29) log-probabilities, one chunk at a time."""
    model = models.load(model_name)
    step, ctx, total = int(chunk_seconds * FPS), int(context_seconds * FPS), feats.shape[0]
    out = []
    if is_causal(model):
        run = models.causal_step(model_name)  # as in the one-pass path (the GRU's bf16 kernel where it runs)
        hidden = None
        for f0 in range(0, total, step):
            h, hidden = run(feats[None, f0:f0 + step], hidden)
            out.append(model.fc(h)[0])
    else:
        whole = models.fast(model_name)  # a bf16 copy for an LSTM, as in the one-pass path
        for f0 in range(0, total, step):
            f1 = min(f0 + step, total)
            a, b = max(0, f0 - ctx), min(total, f1 + ctx)
            out.append(whole(feats[None, a:b])[0, f0 - a:f1 - a])
    return torch.cat(out).log_softmax(-1).numpy()


def window(analysis, start_s: float = 0.0, seconds: float = VIEW_SECONDS):
    """The part of an Analysis from start_s (clamped to the clip) lasting at most `seconds`.

    Returns an object of the same class whose clip, feats, log_probs and best path cover only
    that stretch (best path recomputed on it), plus the window's start in seconds as `offset_s`,
    so a view can label its time axis with offset_s + frame / 100.
    """
    total = analysis.frames
    length = min(total, int(round(seconds * FPS)))
    f0 = int(round(max(0.0, start_s) * FPS))
    f0 = max(0, min(f0, total - length))
    f1 = f0 + length
    clip = analysis.clip
    part = Clip(clip.samples[f0 * HOP:f1 * HOP], clip.original_rate, clip.original_channels, clip.notes)
    lp = analysis.log_probs[f0:f1]
    cut = type(analysis)(part, analysis.model_name, analysis.feats[f0:f1], lp, ctc.greedy(lp))
    cut.offset_s = f0 / FPS
    return cut


def max_start(analysis, seconds: float = VIEW_SECONDS) -> float:
    """The latest window start that still fills a whole window (0 for short clips)."""
    return max(0.0, analysis.frames / FPS - seconds)


def is_long(num_samples: int) -> bool:
    return num_samples / SAMPLE_RATE > LONG_SECONDS
