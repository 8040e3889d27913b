"""A word language model for CTC beam search: which word tends to come next.

    python -m asr_core.wordlm        # builds assets/lm/word_lm.json and reports perplexities

The character LM (asr_core.lm) knows how English is spelled, letter by letter, from the six letters
before each one: a near-miss that looks like English costs it little ("we coll it" is only 4 nats less
likely than "we call it"). A word model knows whole words: "call" is one of the words it has seen,
"coll" is not, and it sees two words back, further than six letters. This is a word trigram with interpolated
modified Kneser-Ney smoothing (Chen & Goodman 1998), trained on the same text as the character LM
(asr_core.lm.texts()["train"]: never a test transcript), stored in backoff form as JSON.

Vocabulary: the words seen at least `min_count` times; rarer words are replaced by the token <unk> while
training, so the model learns how likely an unfamiliar word is in each context. P(w | two previous
words) is a proper distribution over the vocabulary, <unk> and the end of sentence </s>. The beam search
(asr_core.beam) adds log P(word | history) each time a word is completed; an out-of-vocabulary word is
scored as <unk> plus a tunable `oov` log-probability (roughly log P(this spelling | some unknown word)).
"""
from __future__ import annotations

import argparse
import functools
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from . import lm

WORD_LM_FILE = lm.LM_DIR / "word_lm.json"
BOS, EOS, UNK = "<s>", "</s>", "<unk>"
EOS_ID, UNK_ID = 0, 1           # ids 0 and 1; the vocabulary's words follow. BOS is only ever a context.
BOS_ID = -1


class WordLM:
    """Backoff word n-gram model. `table` maps a context (tuple of ids) to (log backoff, {next id: log P})."""

    def __init__(self, words: list[str], order: int, table: dict[tuple, tuple[float, dict[int, float]]],
                 info: dict | None = None):
        self.words = words                      # id -> word; words[0] = EOS, words[1] = UNK
        self.ids = {w: i for i, w in enumerate(words)}
        self.order = order
        self.info = info or {}
        self._table = table
        self._cache: dict[tuple, float] = {}
        self._next_letters: dict[str, str] | None = None

    def __contains__(self, word: str) -> bool:
        return word in self.ids and self.ids[word] > UNK_ID

    def continuations(self, start: str) -> str | None:
        """The letters that can follow `start` in some vocabulary word ("" if `start` is a whole word
        and nothing longer), or None if no vocabulary word begins with `start`."""
        if self._next_letters is None:
            nxt = defaultdict(set)
            for w in self.words[UNK_ID + 1:]:
                for i in range(len(w) + 1):
                    nxt[w[:i]].update(w[i:i + 1])
            self._next_letters = {k: "".join(sorted(v)) for k, v in nxt.items()}
        return self._next_letters.get(start)

    def _id(self, word: str) -> int:
        return BOS_ID if word == BOS else self.ids.get(word, UNK_ID)

    def _context(self, history) -> tuple:
        """The ids of the last order-1 words of history, preceded by <s> if there are fewer."""
        n = self.order - 1
        ids = [BOS_ID] + [self._id(w) for w in list(history)[-n:]] if n else []
        return tuple(ids[-n:]) if n else ()

    def _log_prob(self, w: int, context: tuple) -> float:
        key = (w, context)
        if key in self._cache:
            return self._cache[key]
        entry = self._table.get(context)
        if not context:                        # the unigram row holds every id
            out = entry[1][w]
        elif entry is None:                    # context never seen (or pruned): back off for free
            out = self._log_prob(w, context[1:])
        else:
            bow, nxt = entry
            out = nxt[w] if w in nxt else bow + self._log_prob(w, context[1:])
        if len(self._cache) < 500_000:
            self._cache[key] = out
        return out

    def log_prob(self, word: str, history=()) -> float:
        """Natural log P(word | previous words). An unknown word gets P(<unk> | history); pass EOS for
        the end of the sentence."""
        return self._log_prob(self.ids.get(word, UNK_ID), self._context(history))

    def next_log_probs(self, history=()) -> np.ndarray:
        """log P(next | history) for every id (EOS, UNK, then the vocabulary): a full distribution."""
        context = self._context(history)
        out = np.array(self._table[()][1], dtype=np.float64)
        for n in range(len(context) - 1, -1, -1):  # shortest context first, the longest one last
            entry = self._table.get(context[n:])
            if entry is not None:
                bow, nxt = entry
                out += bow
                out[list(nxt)] = list(nxt.values())
        return out

    def score(self, text: str, eos: bool = True) -> float:
        """log P(words of text), each word given the ones before it, plus the end of sentence."""
        words = text.split()
        total = sum(self.log_prob(w, words[:i]) for i, w in enumerate(words))
        return total + (self.log_prob(EOS, words) if eos else 0.0)

    def perplexity(self, sentences: list[str]) -> float:
        """Per-word perplexity (each word and each end of sentence counts once; <unk> counts as a word)."""
        logp = sum(self.score(s) for s in sentences)
        return math.exp(-logp / sum(len(s.split()) + 1 for s in sentences))

    def oov_rate(self, sentences: list[str]) -> float:
        words = [w for s in sentences for w in s.split()]
        return sum(w not in self for w in words) / max(len(words), 1)

    def to_json(self) -> dict:
        contexts = {}
        for h, (bow, nxt) in sorted(self._table.items()):
            if h == ():
                contexts[""] = [0.0, [], [round(float(x), 4) for x in nxt]]
            else:
                contexts[" ".join(map(str, h))] = [round(bow, 4), list(nxt), [round(x, 4) for x in nxt.values()]]
        return {"format": "asr-lab word n-gram, backoff form, natural log; ids index `words`, -1 is <s>",
                "order": self.order, "words": self.words, "info": self.info, "contexts": contexts}

    @classmethod
    def from_json(cls, d: dict) -> "WordLM":
        table = {}
        for h, (bow, ids, lps) in d["contexts"].items():
            if h == "":
                table[()] = (0.0, lps)  # the unigram row: one log P per id, in id order
            else:
                table[tuple(int(x) for x in h.split())] = (bow, dict(zip(ids, lps)))
        return cls(d["words"], d["order"], table, d.get("info"))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")


@functools.lru_cache(maxsize=2)
def load(path: Path = WORD_LM_FILE) -> WordLM | None:
    """The shipped word LM (cached per process), or None when it has not been built."""
    if not Path(path).exists():
        return None
    return WordLM.from_json(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------------------- training

def train(sentences: list[str], order: int = 3, min_count: int = 2, prune: dict[int, int] | None = None) -> WordLM:
    """Interpolated modified Kneser-Ney over words seen >= min_count times (the rest become <unk>), then
    pruning (n-grams of order n seen fewer than prune[n] times are dropped) and exact renormalization
    of the backoff weights, as in asr_core.lm.train."""
    prune = prune or {}
    counts = Counter(w for s in sentences for w in s.split())
    words = [EOS, UNK] + sorted(w for w, c in counts.items() if c >= min_count)
    ids = {w: i for i, w in enumerate(words)}
    raw = [Counter() for _ in range(order + 1)]  # raw[n][ngram of ids]; an n-gram never predicts BOS
    for s in sentences:
        seq = [BOS_ID] + [ids.get(w, UNK_ID) for w in s.split()] + [EOS_ID]
        for n in range(1, order + 1):
            raw[n].update(tuple(seq[i - n + 1:i + 1]) for i in range(max(1, n - 1), len(seq)))
    # Kneser-Ney counts: the highest order counts tokens, lower orders count distinct left neighbours
    # (except n-grams that start with BOS, which cannot have one).
    kn = [Counter() for _ in range(order + 1)]
    kn[order] = raw[order]
    for n in range(order - 1, 0, -1):
        for g in raw[n + 1]:
            kn[n][g[1:]] += 1
        for g, c in raw[n].items():
            if g[0] == BOS_ID:
                kn[n][g] = c

    # interp[n][ngram]: the interpolated P(w | h) of every n-gram seen at order n
    uniform = 1.0 / len(words)
    interp: list[dict[tuple, float]] = [dict() for _ in range(order + 1)]
    lower_of = lambda g: interp[len(g) - 1][g[1:]] if len(g) > 1 else uniform
    for n in range(1, order + 1):
        d = np.array([0.0, *lm._discounts(kn[n])])
        by_ctx = defaultdict(dict)
        for g, c in kn[n].items():
            by_ctx[g[:-1]][g[-1]] = c
        for h, nxt in by_ctx.items():
            total = sum(nxt.values())
            mass = sum(d[min(c, 3)] for c in nxt.values()) / total  # what the discounts free for the lower order
            for w, c in nxt.items():
                interp[n][h + (w,)] = max(c - d[min(c, 3)], 0.0) / total + mass * lower_of(h + (w,))
    unigram = np.zeros(len(words))
    for (w,), p in interp[1].items():
        unigram[w] = p
    unseen = unigram == 0                       # e.g. <unk> when every word is in the vocabulary
    if unseen.any():                            # they share the discounted mass (their uniform part)
        unigram[unseen] = (1.0 - unigram.sum()) / unseen.sum()

    table: dict[tuple, tuple[float, dict[int, float] | list]] = {(): (0.0, np.log(unigram).tolist())}
    for n in range(2, order + 1):
        model = WordLM(words, order, table)    # lower orders are final before this one is normalized
        by_ctx = defaultdict(dict)
        for g, p in interp[n].items():
            if raw[n][g] >= prune.get(n, 1):
                by_ctx[g[:-1]][g[-1]] = p
        for h, nxt in by_ctx.items():
            below = sum(math.exp(model._log_prob(w, h[1:])) for w in nxt)
            bow = (1.0 - sum(nxt.values())) / max(1.0 - below, 1e-12)
            table[h] = (math.log(max(bow, 1e-12)), {w: math.log(p) for w, p in nxt.items()})
    return WordLM(words, order, table)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Build the word n-gram LM used by beam search.")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--min-count", type=int, default=2, help="words seen fewer times become <unk>")
    p.add_argument("--prune", type=int, default=3, help="drop trigrams and longer seen fewer times")
    p.add_argument("--out", type=Path, default=WORD_LM_FILE)
    args = p.parse_args(argv)
    t = lm.texts()
    model = train(t["train"], args.order, args.min_count, {n: args.prune for n in range(3, args.order + 1)})
    measured = {name: {"perplexity_per_word": round(model.perplexity(t[name]), 2),
                       "oov_rate": round(model.oov_rate(t[name]), 4)}
                for name in ("lj_heldout", "speechocean762_test", "dev")}
    model.info = {"smoothing": "interpolated modified Kneser-Ney", "order": args.order,
                  "vocabulary": f"{len(model.words) - 2} words seen >= {args.min_count} times, plus <unk> and </s>",
                  "pruning": f"n-grams of order 3..{args.order} seen fewer than {args.prune} times dropped",
                  "sentences": t["counts"], "measured": measured, "dev_speakers": lm.dev_speakers()}
    model.save(args.out)
    size = args.out.stat().st_size / 1e6
    print(f"{args.out}: order {args.order}, {len(model.words) - 2} words, {len(model._table)} contexts, {size:.2f} MB")
    for name, m in measured.items():
        print(f"  {name}: perplexity per word {m['perplexity_per_word']:.1f}, out of vocabulary {m['oov_rate']:.2%}")


if __name__ == "__main__":
    main()
