"""A character language model for CTC beam search: which letter tends to come next in English text.

    python -m asr_core.lm            # builds assets/lm/char_lm.json and reports perplexities

A 7-gram over the 28 characters of the vocabulary (space, apostrophe, a-z) plus sentence boundaries,
smoothed with interpolated modified Kneser-Ney (Chen & Goodman 1998) and pruned of rare long n-grams.
It is stored in backoff form, like an ARPA file but as JSON: for each context h, the log-probability of
every character seen after h, and the backoff weight that scales the shorter context's distribution for
the rest. P(c | h) is therefore always a full 29-way distribution (28 characters + end of sentence).

Training text: LJ Speech's normalized sentences, speechocean762 *train* transcripts (minus the tuning
speakers, see DEV_SPEAKERS; counted IN_DOMAIN_COPIES times, since they are the one text like the prompts
the app's users read), the ten digit words, and everyday English from Debian packages (asr_core.lmtext:
WordNet's usage examples and the fortunes' sentences). Never any test transcript: the LJ Speech clips used
for testing, the held-out synthesized voices' sentences and every 20th LJ sentence (for perplexity) are
left out, and so is any extra sentence equal to a test or dev one; speechocean762 test text is only ever
measured.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from . import data, lmtext
from .vocab import LABELS, normalize_text

LM_DIR = Path(__file__).resolve().parents[1] / "assets" / "lm"
LM_FILE = LM_DIR / "char_lm.json"
CONFIG_FILE = LM_DIR / "config.json"

BOS, EOS = "<", ">"             # sentence boundaries inside n-gram strings (never in the vocabulary)
SYMBOLS = [EOS] + LABELS[1:]    # what can come next; index i matches vocabulary class i (0, the blank slot, is EOS)
_INDEX = {s: i for i, s in enumerate(SYMBOLS)}
DEV_SPEAKERS = 10               # speechocean762 train speakers kept out of the LM to tune alpha/beta on
IN_DOMAIN_COPIES = 3           # times the speechocean762 train transcripts are counted (a simple weight)


class CharLM:
    """Backoff character n-gram model. `table` maps a context h to (log backoff, {next symbol: log P}).

    For decoding, the full next-symbol distribution of every stored context is worked out once, when the
    model is built or loaded, into one read-only (contexts, 29) array: P(. | h) is then the row of the
    longest suffix of h that is stored (a context never seen, or pruned, backs off for free). No cache
    grows while a server answers beam requests."""

    def __init__(self, order: int, table: dict[str, tuple[float, dict[str, float]]] | None, info: dict | None = None,
                 dense: tuple[dict[str, int], np.ndarray] | None = None):
        self.order = order
        self.info = info or {}
        self._table = table  # the backoff form training builds and to_json writes (None when loaded)
        self._row_of, self._rows = dense or _dense({h: (bow, list(nxt), list(nxt.values()))
                                                    for h, (bow, nxt) in table.items()})

    def _dist(self, h: str) -> np.ndarray:
        row_of = self._row_of
        while h not in row_of:
            h = h[1:]
        return self._rows[row_of[h]]

    def next_log_probs(self, history: str) -> np.ndarray:
        """Natural log P(next | history) as a (29,) array in vocabulary order; index 0 is end of sentence."""
        return self._dist((BOS + history)[-(self.order - 1):])

    def score(self, text: str, eos: bool = True) -> float:
        """log P(text) = sum over characters (and the end of sentence) of log P(c | previous characters)."""
        total = sum(self.next_log_probs(text[:i])[_INDEX[c]] for i, c in enumerate(text))
        return float(total + (self.next_log_probs(text)[0] if eos else 0.0))

    def perplexity(self, sentences: list[str]) -> float:
        """Per-symbol perplexity (each character and each end of sentence counts once)."""
        logp = sum(self.score(s) for s in sentences)
        return math.exp(-logp / sum(len(s) + 1 for s in sentences))

    def to_json(self) -> dict:
        if self._table is None:
            raise ValueError("a loaded model keeps only its decoding array: save the model that training built")
        table = {}
        for h, (bow, nxt) in sorted(self._table.items()):
            table[h] = [round(bow, 4), "".join(nxt), [round(float(x), 4) for x in nxt.values()]]
        return {"format": "asr-lab character n-gram, backoff form, natural log", "order": self.order,
                "symbols": "".join(SYMBOLS), "bos": BOS, "eos": EOS, "info": self.info, "contexts": table}

    @classmethod
    def from_json(cls, d: dict) -> "CharLM":
        return cls(d["order"], None, d.get("info"), dense=_dense(d["contexts"]))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), separators=(",", ":")) + "\n")


@functools.lru_cache(maxsize=2)
def load(path: Path = LM_FILE) -> CharLM | None:
    """The shipped LM (cached per process), or None when it has not been built."""
    if not Path(path).exists():
        return None
    return CharLM.from_json(json.loads(Path(path).read_text()))


def config(path: Path | None = None) -> dict:
    """Beam-search settings tuned on the dev set: {"alpha", "beta", "beam", "models": {name: {...}}}
    (assets/lm/config.json, or another LM directory's config.json)."""
    path = path or CONFIG_FILE
    if path.exists():
        return json.loads(path.read_text())
    return {"alpha": 0.5, "beta": 1.0, "beam": 16, "models": {}}


# ----------------------------------------------------------------------------------------- training

def train(sentences: list[str], order: int = 7, min_count: dict[int, int] | None = None) -> CharLM:
    """Interpolated modified Kneser-Ney, then pruning (n-grams of order n seen fewer than min_count[n]
    times are dropped) and exact renormalization of the backoff weights."""
    min_count = min_count or {}
    raw = [Counter() for _ in range(order + 1)]  # raw[n][ngram]; an n-gram never predicts BOS
    for s in sentences:
        s = BOS + s + EOS
        for n in range(1, order + 1):
            raw[n].update(s[i - n + 1:i + 1] for i in range(max(1, n - 1), len(s)))
    # Kneser-Ney counts: the highest order counts tokens; lower orders count distinct left neighbours,
    # except n-grams that start with BOS, which cannot have one.
    kn = [Counter() for _ in range(order + 1)]
    kn[order] = raw[order]
    for n in range(order - 1, 0, -1):
        for w in raw[n + 1]:
            kn[n][w[1:]] += 1
        for w, c in raw[n].items():
            if w[0] == BOS:
                kn[n][w] = c

    # full[n][h]: the interpolated distribution P(. | h) over SYMBOLS for every context h seen at order n
    full: list[dict[str, np.ndarray]] = [dict() for _ in range(order + 1)]
    for n in range(1, order + 1):
        discount = np.array([0.0, *_discounts(kn[n])])
        by_ctx = defaultdict(dict)
        for w, c in kn[n].items():
            by_ctx[w[:-1]][_INDEX[w[-1]]] = c
        for h, nxt in by_ctx.items():
            idx, cnt = np.array(list(nxt)), np.array(list(nxt.values()), dtype=np.float64)
            d = discount[np.minimum(cnt, 3).astype(int)]
            lower = _lower(full, h[1:]) if n > 1 else np.full(len(SYMBOLS), 1 / len(SYMBOLS))
            p = d.sum() / cnt.sum() * lower
            p[idx] += np.maximum(cnt - d, 0) / cnt.sum()
            full[n][h] = p

    # Prune, then give every kept context the backoff weight that makes its distribution sum to one
    # given what is actually stored below it.
    table: dict[str, tuple[float, dict[str, float]]] = {"": (0.0, dict(zip(SYMBOLS, np.log(full[1][""]))))}
    for n in range(2, order + 1):
        model = CharLM(order, table)  # lower orders are final before this one is normalized
        for h, p in full[n].items():
            kept = [i for i, s in enumerate(SYMBOLS) if raw[n][h + s] >= min_count.get(n, 1) and raw[n][h + s] > 0]
            if not kept:
                continue
            lower = np.exp(model._dist(h[1:]))
            bow = (1.0 - p[kept].sum()) / max(1.0 - lower[kept].sum(), 1e-12)
            table[h] = (math.log(max(bow, 1e-12)), {SYMBOLS[i]: math.log(p[i]) for i in kept})
    return CharLM(order, table)


def _dense(contexts: dict[str, tuple]) -> tuple[dict[str, int], np.ndarray]:
    """From the backoff form {h: (log backoff, symbols, their log P)}: each context's row number and the
    (contexts, 29) array of full log-distributions. A row is its longest stored shorter suffix's row plus
    the backoff weight, with the symbols seen after h overwritten; shorter contexts come first."""
    assert "" in contexts, "the unigram context is always stored"
    keys = sorted(contexts, key=len)
    row_of = {h: i for i, h in enumerate(keys)}
    rows = np.empty((len(keys), len(SYMBOLS)))
    for i, h in enumerate(keys):
        bow, symbols, log_probs = contexts[h]
        if h:
            suffix = h[1:]
            while suffix not in row_of:
                suffix = suffix[1:]
            rows[i] = rows[row_of[suffix]] + bow
        else:
            rows[i] = -math.log(len(SYMBOLS))
        rows[i, [_INDEX[s] for s in symbols]] = log_probs
    rows.setflags(write=False)
    return row_of, rows


def _lower(full, h: str) -> np.ndarray:
    """The interpolated distribution of the longest seen suffix of h."""
    while h not in full[len(h) + 1]:
        h = h[1:]
    return full[len(h) + 1][h]


def _discounts(counts: Counter) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the counts of counts."""
    n = Counter(c for c in counts.values() if c <= 4)
    n1, n2, n3, n4 = (max(n[k], 1) for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    return (max(1 - 2 * y * n2 / n1, 0.05), max(2 - 3 * y * n3 / n2, 0.05), max(3 - 4 * y * n4 / n3, 0.05))


# ------------------------------------------------------------------------------------------- text

def dev_speakers() -> list[str]:
    """A fixed handful of speechocean762 train speakers whose sentences the LM never sees (tuning set)."""
    speakers = sorted({u.speaker for u in data.speechocean("train")})
    return speakers[::len(speakers) // DEV_SPEAKERS][:DEV_SPEAKERS]


def dev_utterances() -> list[data.Utterance]:
    dev = set(dev_speakers())
    return [u for u in data.speechocean("train") if u.speaker in dev]


def texts() -> dict[str, list[str]]:
    """Training and held-out sentences, all normalized. Test transcripts are only ever measured."""
    meta = data.DATA / "ljspeech-subset" / "metadata.csv"
    rows = list(csv.reader(open(meta, encoding="utf-8"), delimiter="|", quoting=csv.QUOTE_NONE))
    lj_test_ids = {u.uid for u in data.ljspeech("test")}
    synth_test = {u.text for u in data.synthesized("test")}
    lj_train, lj_heldout, excluded = [], [], 0
    for i, r in enumerate(rows):
        t = normalize_text(r[-1])
        if not t:
            continue
        if r[0] in lj_test_ids or t in synth_test:
            excluded += 1
        elif i % 20 == 0:
            lj_heldout.append(t)
        else:
            lj_train.append(t)
    dev = set(dev_speakers())
    so_train = [u.text for u in data.speechocean("train") if u.speaker not in dev and u.text]
    digits = "zero one two three four five six seven eight nine".split()
    so_test = [u.text for u in data.speechocean("test") if u.text]
    dev_text = [u.text for u in dev_utterances() if u.text]
    unseen = set(so_test) | set(dev_text) | synth_test | set(lj_heldout) | {u.text for u in data.ljspeech("test")}
    wordnet = [t for t in lmtext.wordnet_examples() if t not in unseen]
    fortunes = [t for t in lmtext.fortune_sentences() if t not in unseen]
    return {"train": lj_train + so_train * IN_DOMAIN_COPIES + digits + wordnet + fortunes, "lj_heldout": lj_heldout,
            "speechocean762_test": so_test, "dev": dev_text,
            "counts": {"ljspeech": len(lj_train), "speechocean762_train": len(so_train),
                       "speechocean762_train_copies": IN_DOMAIN_COPIES, "digit_words": len(digits),
                       "wordnet_examples": len(wordnet), "fortunes": len(fortunes),
                       "ljspeech_heldout": len(lj_heldout), "ljspeech_excluded_as_test": excluded,
                       "synth_test_sentences_excluded": len(synth_test)}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Build the character n-gram LM used by beam search.")
    p.add_argument("--order", type=int, default=7)
    p.add_argument("--min-count", type=int, default=3, help="drop n-grams of order >= 4 seen fewer times")
    p.add_argument("--out", type=Path, default=LM_FILE)
    args = p.parse_args(argv)
    t = texts()
    prune = {n: args.min_count for n in range(4, args.order + 1)}
    model = train(t["train"], args.order, prune)
    measured = {name: round(model.perplexity(t[name]), 3)
                for name in ("lj_heldout", "speechocean762_test", "dev")}
    model.info = {"smoothing": "interpolated modified Kneser-Ney", "order": args.order,
                  "pruning": f"n-grams of order 4..{args.order} seen fewer than {args.min_count} times dropped",
                  "sentences": t["counts"], "perplexity_per_char": measured,
                  "dev_speakers": dev_speakers()}
    model.save(args.out)
    size = args.out.stat().st_size / 1e6
    print(f"{args.out}: order {args.order}, {len(model._table)} contexts, {size:.2f} MB")
    for name, ppl in measured.items():
        print(f"  perplexity per character, {name}: {ppl:.3f}")


if __name__ == "__main__":
    main()
