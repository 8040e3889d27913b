"""Stage 4 — CTC decoding: from T per-frame distributions to a transcript of L << T characters.

Best path: take the most probable class at every frame, merge repeated classes, drop blanks.
The blank is what lets "hello" keep two l's: the path l l · l collapses to "ll", but l l l to "l".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vocab import BLANK, decode


@dataclass
class Collapse:
    """Every step of best-path decoding, kept so the views can show it."""
    path: list[int]      # argmax class per frame (length T)
    merged: list[int]    # repeats merged, blanks still in
    labels: list[int]    # blanks removed (length L)

    @property
    def text(self) -> str:
        return decode(self.labels)


def merge_repeats(path) -> list[int]:
    return [int(c) for i, c in enumerate(path) if i == 0 or c != path[i - 1]]


def remove_blanks(path) -> list[int]:
    return [int(c) for c in path if c != BLANK]


def collapse(path) -> Collapse:
    """Apply the CTC collapse B(path): merge repeats, then remove blanks."""
    path = [int(c) for c in path]
    merged = merge_repeats(path)
    return Collapse(path, merged, remove_blanks(merged))


def greedy(log_probs) -> Collapse:
    """Best-path decoding of a (T, C) array of (log-)probabilities."""
    return collapse(np.asarray(log_probs).argmax(axis=-1))
