"""Is one model really better than another? A paired speaker bootstrap on speechocean762 test, greedy.

    python -m asr_core.compare lstm runs/lstmA.safetensors runs/lstmB.safetensors
    python -m asr_core.compare gru candidates/gru.safetensors --resamples 2000 --json /tmp/gru.json
    python -m asr_core.compare lstm runs/lstm17.safetensors+assets/teachers/lstm3.safetensors   # an ensemble

Each model (a shipped name, or a NAME.safetensors path with its NAME.json card beside it, as the trainer's
--out-dir and asr_core.soup write them) decodes the same held-out utterances by best path in float32, and
jiwer counts every utterance's character and word edits. The first model is the baseline: for each other one
the table gives the difference in CER and WER (corpus level: all edits / all reference characters or words)
and its 95 % interval from resampling the test *speakers* with replacement, each drawn speaker bringing all of
their utterances (one speaker's clips are not independent draws). A name joining models with "+" is their
ensemble as the trainer's teachers make it: per frame, the mean of the members' log-probabilities, renormalized
(its members should answer at the same frames: the causal GRU and RNN answer a few frames after the
bidirectional LSTM, so mix like with like). The same draws serve every candidate, so
the comparison is paired. An interval that leaves out 0 says the difference is not the luck of which 100
speakers happened to be tested; one comparison among many chosen on test itself still favours the chosen one.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import jiwer
import numpy as np
import torch

from . import ctc, data, evaluate, models


def resolve(name: str) -> tuple[str, Path]:
    """(model name, its directory): a shipped model, or NAME.safetensors with NAME.json beside it."""
    if name.endswith(".safetensors"):
        path = Path(name)
        if not path.exists() or not path.with_suffix(".json").exists():
            raise FileNotFoundError(f"{name}: needs the weights and their {path.with_suffix('.json').name} card")
        return path.stem, path.parent
    if name not in models.available():
        raise KeyError(f"unknown model {name!r}; shipped: {', '.join(models.available())}")
    return name, models.MODELS_DIR


def members(name: str) -> list[tuple[str, Path]]:
    """resolve() for each model of an ensemble written "a+b+c" (a single model is an ensemble of one)."""
    return [resolve(part) for part in name.split("+")]


def ensemble_log_probs(name: str, feats: list[torch.Tensor]) -> list[np.ndarray]:
    """(T, 29) log-probabilities per utterance: the model's, or for "a+b" the members' joined by models.ensemble
    (as the trainer joins its teachers, here in float32)."""
    per_member = [evaluate.log_probs(stem, feats, directory=directory) for stem, directory in members(name)]
    if len(per_member) == 1:
        return per_member[0]
    return [models.ensemble([torch.from_numpy(m[i]) for m in per_member]).numpy() for i in range(len(feats))]


def edit_counts(refs: list[str], hyps: list[str]) -> dict[str, np.ndarray]:
    """Per utterance: character edits, reference characters, word edits, reference words (jiwer's alignments)."""
    out = {k: np.zeros(len(refs), dtype=np.int64) for k in ("char_edits", "chars", "word_edits", "words")}
    for i, (r, h) in enumerate(zip(refs, hyps)):
        c, w = jiwer.process_characters(r, h), jiwer.process_words(r, h)
        out["char_edits"][i] = c.substitutions + c.deletions + c.insertions
        out["chars"][i] = c.substitutions + c.deletions + c.hits
        out["word_edits"][i] = w.substitutions + w.deletions + w.insertions
        out["words"][i] = w.substitutions + w.deletions + w.hits
    return out


def speaker_draws(speakers: list[str], resamples: int, seed: int = 0) -> list[np.ndarray]:
    """`resamples` bootstrap samples of utterance indices: the speakers drawn with replacement, each with all
    of their utterances."""
    names = sorted(set(speakers))
    index = {s: np.flatnonzero(np.asarray(speakers) == s) for s in names}
    rng = np.random.default_rng(seed)
    return [np.concatenate([index[names[j]] for j in rng.integers(0, len(names), len(names))])
            for _ in range(resamples)]


def resampled_differences(base_edits, cand_edits, lengths, draws: list[np.ndarray]) -> tuple[float, np.ndarray]:
    """Candidate minus baseline error rate (all edits / all reference units): on all utterances, and in each draw."""
    base_edits, cand_edits, lengths = map(np.asarray, (base_edits, cand_edits, lengths))
    diff = (cand_edits.sum() - base_edits.sum()) / lengths.sum()
    return float(diff), np.array([(cand_edits[d].sum() - base_edits[d].sum()) / lengths[d].sum() for d in draws])


def interval(diff: float, boot: np.ndarray) -> dict:
    """A difference and its 95 % bootstrap interval, rounded for tables."""
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"diff": round(float(diff), 4), "low": round(float(lo), 4), "high": round(float(hi), 4)}


def paired_difference(base_edits, cand_edits, lengths, draws: list[np.ndarray]) -> dict:
    """Candidate minus baseline error rate (all edits / all reference units), with its 95 % bootstrap interval."""
    return interval(*resampled_differences(base_edits, cand_edits, lengths, draws))


def greedy_hypotheses(name: str, feats: list[torch.Tensor]) -> list[str]:
    return [ctc.greedy(lp).text for lp in ensemble_log_probs(name, feats)]


def compare(names: list[str], items: list[tuple[torch.Tensor, str]], speakers: list[str],
            resamples: int = 2000, seed: int = 0) -> dict:
    """Every model's greedy CER/WER on `items` and each one's paired difference from names[0]."""
    if len(speakers) != len(items):
        raise ValueError(f"{len(items)} utterances but {len(speakers)} speaker labels")
    refs = [ref for _, ref in items]
    feats = [f for f, _ in items]
    counts = {n: edit_counts(refs, greedy_hypotheses(n, feats)) for n in names}
    draws = speaker_draws(speakers, resamples, seed)
    base = counts[names[0]]
    out = {"n_utts": len(items), "n_speakers": len(set(speakers)), "resamples": resamples, "decoder": "greedy",
           "models": {}}
    for n in names:
        c = counts[n]
        row = {"cer": round(float(c["char_edits"].sum() / c["chars"].sum()), 4),
               "wer": round(float(c["word_edits"].sum() / c["words"].sum()), 4)}
        if n != names[0]:
            row["vs_baseline"] = {"cer": paired_difference(base["char_edits"], c["char_edits"], c["chars"], draws),
                                  "wer": paired_difference(base["word_edits"], c["word_edits"], c["words"], draws)}
        out["models"][n] = row
    return out


def speechocean_test(limit: int | None = None) -> tuple[list, list[str]]:
    """speechocean762 test (features, reference) pairs and each one's speaker, checked to correspond."""
    items = evaluate.samples("speechocean762", "test", limit)
    utts = evaluate.spread([u for u in data.speechocean("test") if u.text], limit)
    if [u.text for u in utts] != [ref for _, ref in items]:
        raise SystemExit("speechocean762 test: the scored clips do not follow the corpus one to one "
                         "(rebuild the cache with python -m asr_core.data --only speechocean762/test)")
    return items, [u.speaker for u in utts]


def table(result: dict) -> str:
    base = next(iter(result["models"]))
    lines = [f"speechocean762 test: {result['n_utts']} utterances, {result['n_speakers']} speakers; greedy, float32; "
             f"differences vs {base}, 95 % interval from {result['resamples']} speaker resamples",
             f"{'model':40s} {'CER':>7s} {'WER':>7s}  {'dCER [95 %]':>26s}  {'dWER [95 %]':>26s}"]
    for name, r in result["models"].items():
        cells = ""
        for k in ("cer", "wer"):
            d = r.get("vs_baseline", {}).get(k)
            cell = f"{d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]" if d else "baseline"
            cells += f"  {cell:>26s}"
        lines.append(f"{name:40s} {r['cer']:7.4f} {r['wer']:7.4f}{cells}")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m asr_core.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="the baseline first, then the candidates (names or .safetensors paths; "
                                                "a+b: their ensemble)")
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, help="at most N test utterances (evenly spread)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the result here")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("give a baseline and at least one candidate")
    try:
        for n in args.models:
            members(n)
    except (KeyError, FileNotFoundError) as e:
        p.error(str(e.args[0] if isinstance(e, KeyError) else e))
    torch.set_num_threads(args.threads)
    items, speakers = speechocean_test(args.limit)
    if not items:
        p.error(f"no speechocean762 test data under {data.DATA}")
    result = compare(args.models, items, speakers, args.resamples, args.seed)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
