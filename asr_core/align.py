"""Reference text and CTC: how probable is what was said, and when was each character said?

Given the model's (T, 29) log-probabilities and the text that was spoken:

- CTC loss: -log P(text | audio), the sum over every frame path that collapses to the text
  (torch.nn.functional.ctc_loss does the forward algorithm exactly).
- Forced alignment: the single most probable path that collapses to the text
  (torchaudio.functional.forced_align, Viterbi), merged into one span of frames per character
  (torchaudio.functional.merge_tokens). Characters between spaces make the words.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF

from .features import FRAMES_PER_SECOND
from .vocab import BLANK, LABELS, encode, normalize_text

SPACE = LABELS.index(" ")


class AlignmentError(ValueError):
    """The reference cannot be aligned to this clip; the message is written for the user."""


def min_frames(labels) -> int:
    """Frames a CTC path needs for this labelling: one per label, plus a blank between repeated labels."""
    labels = list(labels)
    return len(labels) + sum(a == b for a, b in zip(labels, labels[1:]))


def check(num_frames: int, labels) -> None:
    if not labels:
        raise AlignmentError("The reference text has no letters to align (only a-z, apostrophe and spaces count).")
    need = min_frames(labels)
    if num_frames < need:
        raise AlignmentError(f"The clip has {num_frames} frames but this text needs at least {need} "
                             f"(one per character, plus a blank between doubled letters). Use a shorter text.")


def labelling_nll(log_probs, labels) -> float:
    """-log P(labels | x): the CTC loss of one labelling, summed over all of its paths (nats)."""
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float32))
    labels = [int(k) for k in labels]
    if not labels:  # the empty labelling has exactly one path: blank at every frame
        return float(-lp[:, BLANK].sum())
    if lp.shape[0] < min_frames(labels):
        return float("inf")
    return float(F.ctc_loss(lp[:, None, :], torch.tensor([labels]), torch.tensor([lp.shape[0]]),
                            torch.tensor([len(labels)]), blank=BLANK, reduction="sum"))


def best_path_log_prob(log_probs, labels) -> float:
    """log-probability of the single most probable path that collapses to `labels` (Viterbi)."""
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float32))
    labels = [int(k) for k in labels]
    if not labels:
        return float(lp[:, BLANK].sum())
    if lp.shape[0] < min_frames(labels):
        return float("-inf")
    _, scores = AF.forced_align(lp[None], torch.tensor([labels], dtype=torch.int32), blank=BLANK)
    return float(scores.sum())


def ctc_loss(log_probs, text: str) -> dict:
    """CTC loss of a reference text: total nats and per character."""
    labels = encode(text)
    check(len(log_probs), labels)
    total = labelling_nll(log_probs, labels)
    return {"total": total, "per_char": total / len(labels), "chars": len(labels)}


@dataclass
class Span:
    """One aligned character or word: frames [start, end) and seconds [start_s, end_s)."""
    text: str
    start: int
    end: int
    start_s: float
    end_s: float
    confidence: float   # mean probability the model gives this character over its frames (words: mean of chars)


@dataclass
class Alignment:
    text: str               # the normalized reference
    labels: list[int]
    path: np.ndarray        # (T,) class at each frame on the best path (blank included)
    chars: list[Span]       # one per character of the text, spaces included
    words: list[Span]
    nll: float              # -log P(text | audio), all paths
    path_log_prob: float    # log-probability of the single best aligned path

    @property
    def per_char_nll(self) -> float:
        return self.nll / len(self.labels)

    def to_json(self) -> dict:
        return {
            "text": self.text,
            "frames": int(len(self.path)),
            "frames_per_second": FRAMES_PER_SECOND,
            "ctc_loss": {"total": round(self.nll, 4), "per_char": round(self.per_char_nll, 4)},
            "best_path_log_prob": round(self.path_log_prob, 4),
            "chars": [_rounded(s) for s in self.chars],
            "words": [_rounded(s) for s in self.words],
        }


def _rounded(span: Span) -> dict:
    d = asdict(span)
    d.update(start_s=round(span.start_s, 3), end_s=round(span.end_s, 3), confidence=round(span.confidence, 4))
    return d


def _span(text: str, start: int, end: int, confidence: float) -> Span:
    return Span(text, int(start), int(end), start / FRAMES_PER_SECOND, end / FRAMES_PER_SECOND, float(confidence))


def align(log_probs, text: str) -> Alignment:
    """Force-align a reference text to the model's outputs (raises AlignmentError with a readable message)."""
    text = normalize_text(text)
    labels = encode(text)
    lp = torch.as_tensor(np.asarray(log_probs, dtype=np.float32))
    check(lp.shape[0], labels)
    path, scores = AF.forced_align(lp[None], torch.tensor([labels], dtype=torch.int32), blank=BLANK)
    path, scores = path[0], scores[0]
    spans = AF.merge_tokens(path, scores.exp(), blank=BLANK)
    chars = [_span(LABELS[s.token], s.start, s.end, s.score) for s in spans]
    words, current = [], []
    for ch in chars + [None]:
        if ch is None or ch.text == " ":
            if current:
                conf = float(np.mean([c.confidence for c in current]))
                words.append(_span("".join(c.text for c in current), current[0].start, current[-1].end, conf))
            current = []
        else:
            current.append(ch)
    return Alignment(text=text, labels=labels, path=path.numpy(), chars=chars, words=words,
                     nll=labelling_nll(lp, labels), path_log_prob=float(scores.sum()))


def segment(samples: np.ndarray, span: Span, sample_rate: int = 16_000, pad_s: float = 0.03) -> np.ndarray:
    """The audio of one span (with a few ms either side, so short characters are audible)."""
    a = max(0, int((span.start_s - pad_s) * sample_rate))
    b = min(len(samples), int((span.end_s + pad_s) * sample_rate))
    return samples[a:b]
