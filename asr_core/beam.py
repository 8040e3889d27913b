"""Stage 4b — CTC prefix beam search: the most probable *text*, not the most probable path.

Best-path decoding (ctc.greedy) follows the single most probable frame-by-frame path. But CTC gives a
text the sum of the probabilities of ALL its alignments, and many weak paths to one text can outweigh
the one best path to another. Prefix beam search (Graves 2012; Hannun et al. 2014) walks the frames
keeping the `beam` best text prefixes. For each it holds two numbers, the probability of the alignments
that end in a blank (p_b) and of those that end in the prefix's last character (p_nb), so that when two
alignments reach the same text their probabilities add up. At each frame a prefix can
  - stay the same: a blank, or a repeat of its last character (merged by the collapse),
  - grow by one character c: any alignment if c differs from the last character, but only alignments
    ending in blank if c repeats it (l·l gives "ll", ll gives "l").
A character language model (asr_core.lm) can join in: the score of a prefix y is
    log P_ctc(y | audio) + alpha * log P_lm(y) + beta * len(y)
alpha weighs the LM, beta is a bonus per character that offsets the LM's cost of every extra letter.

A word language model (asr_core.wordlm) adds knowledge of whole words. The character LM finds "coll"
almost as English as "call"; the word model has seen "call" and never "coll". Each time a prefix
completes a word (it grows by a space, or the utterance ends) the score gains
    gamma * log P_word(word | the words before it)
and an out-of-vocabulary word is scored as P_word(<unk> | ...) plus the log-probability `oov` (< 0), so
unknown words are penalized but still possible. The `oov` part is paid as soon as the unfinished word
can no longer be spelled into a vocabulary word ("abo" may become "about", "abot" cannot): the beam then
drops such prefixes early instead of comparing them with prefixes that have already paid for their words.
At the end of the utterance the word model's end of sentence is added too. With gamma = 0 the search is
exactly the character-LM search above.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import ctc, lm as lm_module, wordlm as wordlm_module
from .vocab import BLANK, LABELS, decode as decode_ids

_INDEX = {ch: i for i, ch in enumerate(LABELS) if i != BLANK}
SPACE = _INDEX[" "]


@dataclass(frozen=True)
class Hypothesis:
    labels: tuple[int, ...]
    score: float      # acoustic + alpha * lm + beta * len(labels) + gamma * word: what the search ranks by
    acoustic: float   # log P_ctc(labels | audio), summed over the alignments the search kept
    lm: float         # log P_lm(text) including the end of sentence (natural log); 0.0 without an LM
    word: float = 0.0  # log P_word(words) + oov per unknown word, with the end of sentence; 0.0 without one

    @property
    def text(self) -> str:
        return decode_ids(self.labels)


def beam_search(log_probs, beam: int = 16, lm: lm_module.CharLM | None = None, alpha: float = 0.0,
                beta: float = 0.0, nbest: int | None = None, prune_blank: float = 0.999,
                prune_char: float = 1e-3, word_lm: wordlm_module.WordLM | None = None, gamma: float = 0.0,
                oov: float = -3.0) -> list[Hypothesis]:
    """(T, 29) log-probabilities -> up to `nbest` (default: beam) hypotheses, best score first.

    Pruning (set prune_blank=1, prune_char=0 for an exact search): a frame whose blank probability is
    above prune_blank only lets prefixes stay (no character can start there), and at every frame only
    characters with probability >= prune_char are tried as extensions.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    neg_inf = -np.inf
    prefixes = [""]                       # the beam: text prefixes...
    pb, pnb = np.array([0.0]), np.array([neg_inf])  # ...log P(alignments ending in blank / in a character)
    last = np.array([BLANK])              # last label of each prefix (BLANK for the empty prefix)
    length = np.array([0])
    lm_score = np.array([0.0])            # log P_lm(prefix), without the end of sentence
    lm_next = _lm_rows(lm, prefixes)      # (B, 29) log P_lm(next symbol | prefix); zeros without an LM
    word_score = np.array([0.0])          # log P_word(completed words) (+ oov once a spelling is unknown)
    word_rows = _WordRows(word_lm, oov)
    word_next = word_rows(prefixes)       # (B, 29) what each next symbol adds to word_score
    log_floor = np.log(prune_char) if prune_char > 0 else neg_inf

    for row in lp:
        total = np.logaddexp(pb, pnb)
        stay_b = total + row[BLANK]                               # a blank keeps the prefix
        stay_nb = np.where(last != BLANK, pnb + row[last], neg_inf)  # so does repeating its last character
        chars = np.flatnonzero(row[1:] >= log_floor) + 1
        if np.exp(row[BLANK]) > prune_blank or len(chars) == 0:
            pb, pnb = stay_b, stay_nb
            continue
        # grow prefix i by chars[k]: a repeated character needs the alignments that end in blank
        ext = np.where(last[:, None] == chars[None, :], pb[:, None], total[:, None]) + row[chars][None, :]
        # an extension that is already in the beam (prefix j = prefix i + c) merges into j
        where = {p: i for i, p in enumerate(prefixes)}
        column = np.full(len(LABELS), -1)
        column[chars] = np.arange(len(chars))
        parent = np.array([where.get(p[:-1], -1) if p else -1 for p in prefixes])
        j = np.flatnonzero((parent >= 0) & (column[last] >= 0))
        i, k = parent[j], column[last[j]]
        stay_nb[j] = np.logaddexp(stay_nb[j], ext[i, k])
        ext[i, k] = neg_inf
        # rank the prefixes that stay and the new ones together; keep the best `beam`
        ext_lm = lm_score[:, None] + lm_next[:, chars]
        ext_word = word_score[:, None] + word_next[:, chars]
        stay_score = np.logaddexp(stay_b, stay_nb) + alpha * lm_score + beta * length + gamma * word_score
        ext_score = ext + alpha * ext_lm + beta * (length[:, None] + 1) + gamma * ext_word
        scores = np.concatenate([stay_score, ext_score.ravel()])
        top = np.argsort(-scores, kind="stable")[:beam]
        top = top[np.isfinite(scores[top])]
        stays, grows = top[top < len(prefixes)], top[top >= len(prefixes)] - len(prefixes)
        gi, gk = np.divmod(grows, len(chars))
        grown = [prefixes[a] + LABELS[chars[b]] for a, b in zip(gi, gk)]
        prefixes = [prefixes[s] for s in stays] + grown
        pb = np.concatenate([stay_b[stays], np.full(len(grows), neg_inf)])
        pnb = np.concatenate([stay_nb[stays], ext[gi, gk]])
        last = np.concatenate([last[stays], chars[gk]])
        length = np.concatenate([length[stays], length[gi] + 1])
        lm_score = np.concatenate([lm_score[stays], ext_lm[gi, gk]])
        lm_next = np.concatenate([lm_next[stays], _lm_rows(lm, grown)])
        word_score = np.concatenate([word_score[stays], ext_word[gi, gk]])
        word_next = np.concatenate([word_next[stays], word_rows(grown)])

    acoustic = np.logaddexp(pb, pnb)
    lm_total = lm_score + lm_next[:, 0] if lm is not None else lm_score  # column 0 is the end of sentence
    word_total = word_score + word_next[:, 0]  # the last word and the end of sentence
    scores = acoustic + alpha * lm_total + beta * length + gamma * word_total
    order = np.argsort(-scores, kind="stable")[:nbest or beam]
    return [Hypothesis(tuple(_INDEX[ch] for ch in prefixes[n]), float(scores[n]), float(acoustic[n]),
                       float(lm_total[n]), float(word_total[n])) for n in order]


def _lm_rows(lm, prefixes: list[str]) -> np.ndarray:
    if lm is None:
        return np.zeros((len(prefixes), len(LABELS)))
    if not prefixes:
        return np.zeros((0, len(LABELS)))
    return np.stack([lm.next_log_probs(p) for p in prefixes])


class _WordRows:
    """For each prefix, a (29,) row: what growing it by each symbol adds to its word score (column 0:
    ending the utterance there). Cached per prefix. All zeros without a word LM.
      - a space completes the unfinished word w: log P_word(w | the words before it), plus `oov` if w
        is not in the vocabulary;
      - a letter that takes the unfinished word off every vocabulary spelling ("hau" + "z") costs `oov`
        right away (paid once: the word's completion then only adds log P_word(<unk> | ...));
      - the end of the utterance completes the last word and adds log P_word(end of sentence | words)."""

    def __init__(self, word_lm: wordlm_module.WordLM | None, oov: float):
        self.word_lm, self.oov, self._cache = word_lm, oov, {}
        self._leaving: dict[str, list[int]] = {}  # continuations -> the letters' columns that are not in them

    def __call__(self, prefixes: list[str]) -> np.ndarray:
        if self.word_lm is None:
            return np.zeros((len(prefixes), len(LABELS)))
        for p in prefixes:
            if p not in self._cache:
                self._cache[p] = self._row(p)
        return np.array([self._cache[p] for p in prefixes]).reshape(len(prefixes), len(LABELS))

    def _row(self, prefix: str) -> np.ndarray:
        wlm, oov = self.word_lm, self.oov
        *before, word = prefix.split(" ")
        history = [w for w in before if w]
        row = np.zeros(len(LABELS))
        continues = wlm.continuations(word)  # letters that keep `word` a beginning of some vocabulary word
        if continues is None:                # already off the vocabulary: its oov was paid
            row[SPACE] = wlm.log_prob(word, history)
        else:
            if continues not in self._leaving:
                self._leaving[continues] = [_INDEX[c] for c in LABELS[2:] if c not in continues]
            row[self._leaving[continues]] = oov
            if word:
                row[SPACE] = wlm.log_prob(word, history) + (0.0 if word in wlm else oov)
        row[BLANK] = row[SPACE] + wlm.log_prob(wordlm_module.EOS, history + [word] if word else history)
        return row


def labelling_log_prob(log_probs, labels) -> float:
    """Exact log P(labels | audio) under CTC: the log of the sum over every alignment (path) that
    collapses to `labels` (a string or class ids). -inf when the clip has too few frames for it."""
    if isinstance(labels, str):
        labels = [_INDEX[ch] for ch in labels]
    x = torch.as_tensor(np.asarray(log_probs), dtype=torch.float64)[:, None, :]
    loss = F.ctc_loss(x, torch.tensor(list(labels), dtype=torch.long), torch.tensor([x.shape[0]]),
                      torch.tensor([len(labels)]), blank=BLANK, reduction="none", zero_infinity=False)
    return -float(loss[0])


def settings(model: str | None = None, lm_dir: Path | None = None) -> dict:
    """Beam-search keyword arguments: the shipped LMs and the alpha/beta/gamma/oov/beam tuned for `model`
    (assets/lm/config.json; or those of another directory holding char_lm.json, word_lm.json and
    config.json, e.g. LMs built before). Without an LM its weights are 0: the search runs without it."""
    cfg = lm_module.config(lm_dir / "config.json" if lm_dir else None)
    chosen = {"beam": cfg["beam"], "alpha": cfg["alpha"], "beta": cfg["beta"], "gamma": cfg.get("gamma", 0.0),
              "oov": cfg.get("oov", -3.0)}
    chosen.update({k: v for k, v in cfg.get("models", {}).get(model, {}).items() if k in chosen})
    if lm_dir:
        language_model, word_model = lm_module.load(lm_dir / "char_lm.json"), wordlm_module.load(lm_dir / "word_lm.json")
    else:
        language_model, word_model = lm_module.load(), wordlm_module.load()
    if language_model is None:
        chosen.update(alpha=0.0, beta=0.0)
    if word_model is None:
        chosen.update(gamma=0.0)
    return {**chosen, "lm": language_model, "word_lm": word_model if chosen["gamma"] else None}  # 0: skip it


DECODERS = ("greedy", "beam")


def decode(log_probs, decoder: str = "greedy", model: str | None = None, **options) -> str:
    """Transcript of (T, 29) log-probabilities. decoder "greedy": best path; "beam": prefix beam search
    with the shipped LMs and the settings tuned for `model` (keyword options override them)."""
    if decoder == "greedy":
        return ctc.greedy(log_probs).text
    if decoder == "beam":
        return beam_search(log_probs, **{**settings(model), **options})[0].text
    raise ValueError(f"unknown decoder {decoder!r}; choose from {', '.join(DECODERS)}")
