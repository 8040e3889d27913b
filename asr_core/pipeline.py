"""The whole path for one clip: audio -> MFCC frames -> per-frame distributions -> CTC transcript."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import audio, ctc, features, longform, models


@dataclass
class Analysis:
    clip: audio.Clip
    model_name: str
    feats: np.ndarray        # (T, 40) normalized MFCCs
    log_probs: np.ndarray    # (T, 29) log-softmax outputs, one row per frame
    best_path: ctc.Collapse  # greedy decoding, every step kept

    @property
    def probs(self) -> np.ndarray:
        return np.exp(self.log_probs)

    @property
    def text(self) -> str:
        return self.best_path.text

    @property
    def frames(self) -> int:
        return self.feats.shape[0]


def default_model() -> str:
    """The most accurate shipped model (lowest recorded CER)."""
    return models.available()[0]


@torch.inference_mode()
def run_model(model_name: str, feats: torch.Tensor) -> np.ndarray:
    """(T, 40) features -> (T, 29) log-probabilities from the named model (its fast copy, see models.fast)."""
    model = models.fast(model_name)
    return model(feats[None]).log_softmax(-1)[0].numpy()


def analyse(clip: audio.Clip, model_name: str | None = None) -> Analysis:
    model_name = model_name or default_model()
    if longform.is_long(len(clip.samples)):  # long recordings: chunk by chunk, bounded memory
        feats = longform.mfcc(clip.samples)
        log_probs = longform.run_model(model_name, feats)
    else:
        feats = features.mfcc(clip.samples)
        log_probs = run_model(model_name, feats)
    return Analysis(clip, model_name, feats.numpy(), log_probs, ctc.greedy(log_probs))


def transcribe_file(path: str, model_name: str | None = None) -> Analysis:
    return analyse(audio.load(path), model_name)
