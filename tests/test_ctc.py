"""Stage 4: the CTC collapse B (merge repeats, drop blanks) and best-path decoding.

Written paths use "·" for the blank, as the views draw it.
"""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asr_core import ctc, vocab


def ids(path: str) -> list[int]:
    """'hhe·ll·lo' -> class indices, with '·' as the blank."""
    return [vocab.BLANK if ch == vocab.BLANK_SYMBOL else vocab.LABELS.index(ch) for ch in path]


@pytest.mark.parametrize("path, text", [
    ("hhe·ll·lo", "hello"),       # the blank between the l's keeps both
    ("hhellloo", "helo"),         # without it the l's merge into one
    ("h·e·l·l·o", "hello"),
    ("·····", ""),
    ("", ""),
    ("a", "a"),
    ("aaaa", "a"),
    ("a·a", "aa"),
    ("··c·aa··t·", "cat"),
    ("hi  ·there", "hi there"),  # spaces are labels like any other
    ("don''·t", "don't"),
])
def test_collapse_hand_made_paths(path, text):
    result = ctc.collapse(ids(path))
    assert result.text == text
    assert len(result.labels) <= len(result.path) == len(path)


def test_collapse_keeps_every_step():
    result = ctc.collapse(ids("hhe·ll·lo"))
    assert result.path == ids("hhe·ll·lo")
    assert result.merged == ids("he·l·lo")   # repeats merged, blanks still there
    assert result.labels == ids("hello")     # blanks removed: L = 5 from T = 9


def brute_force_collapse(path):
    """An independent B: group equal neighbours, keep one of each group, drop blanks."""
    return [c for c, _ in itertools.groupby(path) if c != vocab.BLANK]


def test_collapse_agrees_with_brute_force_on_random_paths():
    rng = np.random.default_rng(0)
    for _ in range(500):
        T = int(rng.integers(0, 40))
        # mostly blanks and a few letters, so that repeats and separating blanks are frequent
        path = rng.choice([0, 0, 0, 3, 4, 5], size=T).tolist()
        assert ctc.collapse(path).labels == brute_force_collapse(path)


def test_greedy_on_a_hand_made_probability_matrix():
    wanted = "hhe·ll·lo·"
    T, C = len(wanted), vocab.NUM_CLASSES
    probs = np.full((T, C), 0.2 / (C - 1))
    for t, c in enumerate(ids(wanted)):
        probs[t, c] = 0.8
    for matrix in (probs, np.log(probs)):  # probabilities or log-probabilities: same argmax
        result = ctc.greedy(matrix)
        assert result.path == ids(wanted)
        assert result.text == "hello"


def ctc_probability(labels, log_probs) -> float:
    """P(labels | x) as PyTorch's CTC loss computes it (sum over all alignments)."""
    lp = torch.as_tensor(log_probs, dtype=torch.float64)[:, None, :]
    loss = F.ctc_loss(lp, torch.tensor([labels], dtype=torch.long), torch.tensor([lp.shape[0]]),
                      torch.tensor([len(labels)]), blank=vocab.BLANK, reduction="sum")
    return float(torch.exp(-loss))


def test_collapse_is_the_map_ctc_loss_sums_over():
    """Summing the probability of every path by its collapse gives exactly PyTorch's CTC probabilities."""
    rng = np.random.default_rng(1)
    T, C = 5, 3  # blank and two labels: 3**5 = 243 paths
    log_probs = np.log(rng.dirichlet(np.ones(C), size=T))
    by_labels = {}
    for path in itertools.product(range(C), repeat=T):
        p = float(np.exp(sum(log_probs[t, c] for t, c in enumerate(path))))
        key = tuple(ctc.collapse(path).labels)
        by_labels[key] = by_labels.get(key, 0.0) + p
    assert sum(by_labels.values()) == pytest.approx(1.0)
    for labels, p in by_labels.items():
        if labels:  # PyTorch's CTC loss needs a non-empty target
            assert ctc_probability(list(labels), log_probs) == pytest.approx(p, rel=1e-9)


def test_best_path_is_not_always_the_best_transcript():
    """Two frames, blank 0.6 and 'a' 0.4 each: the best path '··' reads "", but "a" is more
    probable (paths a·, ·a and aa: 0.24 + 0.24 + 0.16 = 0.64 > 0.36). Beam search exists for this."""
    a = vocab.LABELS.index("a")
    probs = np.zeros((2, vocab.NUM_CLASSES))
    probs[:, vocab.BLANK], probs[:, a] = 0.6, 0.4
    assert ctc.greedy(probs).text == ""
    with np.errstate(divide="ignore"):
        log_probs = np.log(probs)
    assert ctc_probability([a], log_probs) == pytest.approx(0.64)
    assert ctc_probability([a], log_probs) > 0.36


def test_repeated_letters_need_a_blank_frame():
    """'hello' has L = 5 but needs T >= 6 frames: the two l's must be separated by a blank."""
    target = ids("hello")
    for T, possible in [(5, False), (6, True)]:
        log_probs = np.log(np.full((T, vocab.NUM_CLASSES), 1 / vocab.NUM_CLASSES))
        assert (ctc_probability(target, log_probs) > 0) == possible
