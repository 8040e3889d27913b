"""How much better do the shipped models hear speakers they were trained on than new ones?

    python scripts/fit_gap.py                     # all three models, 300 clips per set
    python scripts/fit_gap.py --model lstm --limit 100
    python scripts/fit_gap.py --corpus synth      # synthesized voices heard in training against the held-out ones
    python scripts/fit_gap.py --corpus synth --model lstm runs/lstmS.safetensors   # a trained run beside the shipped

Greedy CER / WER (jiwer) of a shipped model (or a trained run's .safetensors) on three speechocean762 sets of clean
clips, evenly spread:
  heard  - train utterances of the speakers the acoustic models train on (their clips, unaugmented);
  dev    - train utterances of the 10 LM tuning speakers (asr_core.lm.dev_speakers), left out of the acoustic
           models' training since the twelfth CPU round (heard before it);
  test   - the test split, whose 100 speakers were never in training.
The heard clips share speakers and sentences with training, the test clips neither. With --corpus synth the two
sets are the synthesized clips of the voices in training and of the held-out voices (asr_core.synth), from the
feature caches of `python -m asr_core.data` where present. A model that gets the heard
clips nearly right and the test clips far less so is held back by how few speakers (and sentences) it has heard,
not by its size; one that is poor on both underfits.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from asr_core import ctc, data, evaluate, lm  # noqa: E402


def utterances(limit: int) -> dict[str, list[data.Utterance]]:
    """The three sets of speechocean762 utterances, `limit` each, evenly spread."""
    dev = set(lm.dev_speakers())
    train = data.speechocean("train")
    return {
        "heard": evaluate.spread([u for u in train if u.speaker not in dev], limit),
        "dev": evaluate.spread([u for u in train if u.speaker in dev], limit),
        "test": evaluate.spread(data.speechocean("test"), limit),
    }


def sets(limit: int, corpus: str = "speechocean762") -> dict[str, list]:
    """(MFCC frames, reference) for each clip of the sets: for speechocean762 the three sets above, computed from
    the clean audio; for synth the heard and the held-out voices."""
    if corpus == "synth":
        return {"heard voices": evaluate.samples("synth", "train", limit),
                "held-out voices": evaluate.samples("synth", "test", limit)}
    return {name: evaluate.audio_samples(utts) for name, utts in utterances(limit).items()}


def fit_gap(model: str, samples: dict[str, list]) -> dict[str, dict]:
    """Greedy error rates of one model (a shipped name, or a NAME.safetensors path with its NAME.json card beside
    it) on each set: {set: {"cer", "wer", "n"}}."""
    where = {}
    if model.endswith(".safetensors"):
        where = {"directory": Path(model).parent}
        model = Path(model).stem
    out = {}
    for name, items in samples.items():
        lps = evaluate.log_probs(model, [f for f, _ in items], **where)
        rates = evaluate.error_rates([t for _, t in items], [ctc.greedy(lp).text for lp in lps])
        out[name] = {**rates, "n": len(items)}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", default=["lstm", "gru", "rnn"],
                   help="shipped names (lstm, gru, rnn) or NAME.safetensors paths with their cards beside them")
    p.add_argument("--corpus", default="speechocean762", choices=["speechocean762", "synth"])
    p.add_argument("--limit", type=int, default=300, help="clips per set, evenly spread")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    samples = sets(args.limit, args.corpus)
    print(f"{args.corpus}, greedy, float32, clean clips; CER / WER (clips)")
    width = max(6, *map(len, args.model))   # a row is named as given: a run's path, not its card's name
    print(f"{'model':{width}} " + "  ".join(f"{k:>22}" for k in samples))
    for m in args.model:
        r = fit_gap(m, samples)
        cells = [f"{v['cer']:.3f} / {v['wer']:.3f} ({v['n']:>3})".rjust(22) for v in r.values()]
        print(f"{m:{width}} " + "  ".join(cells))


if __name__ == "__main__":
    main()
