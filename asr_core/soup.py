"""Adopt trained runs into a shipped model: their weights averaged tensor by tensor, their story in its card.

    python -m asr_core.soup runs/gruA.safetensors runs/gruB.safetensors --into gru   # two runs, averaged
    python -m asr_core.soup runs/gruA.safetensors --into gru                         # one run, as it is
    python -m asr_core.soup runs/gruA.safetensors --into gru --with-shipped          # halfway from the start to it

Runs that start from the same weights and train side by side (one per core, different seeds) stay in one
basin of the loss, and the uniform average of their final weights ("model soup", Wortsman et al. 2022)
often hears better than either run: docs/training-log.md's "A fourth CPU round" measured it for the LSTM. `--with-shipped`
counts the weights shipped now (the runs' start) as one more ingredient: with one run, the point halfway
along the straight line from where it started to where it ended (Wortsman et al.'s WiSE-FT). Averaging only
makes sense for runs of one architecture from one start, so mismatched shapes or architectures are refused;
a run trained with another dropout rate computes the same function in eval mode and is adopted (its round
records the rate).

The result replaces assets/models/NAME.safetensors; NAME.json keeps everything it held and gains a
`fine_tuning` round: each run's training block (data, options, command, time, hardware) and learning curve.
Its metrics are then stale: `python -m asr_core.evaluate --model NAME --tune` and `--write-card` follow.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import models


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of same-shaped state dicts, tensor by tensor (computed in float64)."""
    if not states:
        raise ValueError("nothing to average")
    keys = set(states[0])
    for s in states[1:]:
        if set(s) != keys:
            raise ValueError(f"the runs hold different tensors: {sorted(keys ^ set(s))[:4]}")
        for k in keys:
            if s[k].shape != states[0][k].shape:
                raise ValueError(f"{k}: shapes {tuple(states[0][k].shape)} and {tuple(s[k].shape)} differ")
    return {k: (sum(s[k].double() for s in states) / len(states)).to(states[0][k].dtype) for k in sorted(keys)}


SHARED = ("init_from", "teacher")   # what a round states once when all its runs agree on it
TRAINING_ONLY = ("dropout",)        # architecture keys that change how a model trains, not what it computes


def computes(arch: dict) -> dict:
    """The part of an architecture that decides the weights' shapes and the forward pass in eval mode."""
    return {k: v for k, v in arch.items() if k not in TRAINING_ONLY}


def _run_entry(card: dict, shared: dict) -> dict:
    """One run's part of a round: its training block (less what the round states once) and its curve; a run
    keeps its own start and teacher where the runs differ (e.g. one with a teacher, one without)."""
    training = {k: v for k, v in card["training"].items() if k not in SHARED}
    own = {k: card["training"].get(k) for k in SHARED if k not in shared}
    return {"name": card["name"], **own, **training, "curve": card.get("curve", [])}


def round_entry(cards: list[dict], number: int) -> dict:
    """A `fine_tuning` round for runs described by their trainer cards (one run: its block as it is)."""
    first = cards[0]["training"]
    if len(cards) == 1:
        return {"round": number, **first, "curve": cards[0].get("curve", [])}
    shared = {k: first.get(k) for k in SHARED if all(c["training"].get(k) == first.get(k) for c in cards)}
    return {"round": number, **shared,
            "weights": f"uniform average of the {len(cards)} runs' final weights (asr_core.soup; same start, "
                       "trained side by side)",
            "audio_hours_seen": round(sum(c["training"].get("audio_hours_seen", 0) for c in cards), 1),
            "minutes": max(c["training"].get("minutes", 0) for c in cards),
            "runs": [_run_entry(c, shared) for c in cards]}


def adopt(paths: list[Path], into: str, directory: Path = models.MODELS_DIR, note: str | None = None,
          with_shipped: bool = False) -> dict:
    """Average the runs at `paths` (each NAME.safetensors with its NAME.json beside it) into the shipped
    model `into` (a `note` says what the runs' cards cannot; `with_shipped`: the weights shipped now count
    as one more ingredient); returns the new card."""
    cards = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    target_card = directory / f"{into}.json"
    target = json.loads(target_card.read_text()) if target_card.exists() else {k: cards[0][k] for k in
                                                                             ("name", "arch", "parameters", "causal")}
    for p, c in zip(paths, cards):
        if computes(c["arch"]) != computes(target["arch"]):
            raise ValueError(f"{p.name}: architecture {c['arch']} is not {into}'s {target['arch']}")
    rounds = target.get("fine_tuning", [])
    before = max((r.get("round", 0) for r in rounds), default=0)
    shipped = []
    if with_shipped:
        if not (directory / f"{into}.safetensors").exists():
            raise ValueError(f"--with-shipped: no {into}.safetensors in {directory} to start from")
        shipped = [load_file(directory / f"{into}.safetensors")]
    state = average(shipped + [load_file(p) for p in paths])
    models.build(target).load_state_dict(state)   # refuses weights that do not fit the card's architecture
    target["name"] = into
    entry = round_entry(cards, before + 1)
    if with_shipped:
        entry["weights"] = (f"uniform average of the weights shipped before this round (card round {before}) and "
                            f"the {len(cards)} run(s)' final weights (asr_core.soup --with-shipped)")
    for key in TRAINING_ONLY:  # e.g. runs trained with more dropout than the card's: the round says so
        used = [c["arch"].get(key) for c in cards]
        if any(u != target["arch"].get(key) for u in used):
            entry[key] = used[0] if len(set(used)) == 1 else used
    target["fine_tuning"] = rounds + [{**entry, "note": note} if note else entry]
    directory.mkdir(parents=True, exist_ok=True)
    save_file(state, directory / f"{into}.safetensors")
    target_card.write_text(json.dumps(target, indent=2) + "\n")
    models.load.cache_clear()
    return target


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="trainer outputs: NAME.safetensors (NAME.json beside it)")
    p.add_argument("--into", required=True, help="the shipped model to replace, e.g. gru")
    p.add_argument("--out-dir", type=Path, default=models.MODELS_DIR)
    p.add_argument("--note", help="what the round's card should also say (e.g. how its data differed)")
    p.add_argument("--with-shipped", action="store_true",
                   help="count the weights shipped now (the runs' start) as one more ingredient")
    args = p.parse_args()
    card = adopt(args.runs, args.into, args.out_dir, args.note, args.with_shipped)
    print(f"wrote {args.out_dir / args.into}.safetensors: the average of {len(args.runs)} run(s)"
          f"{' and the weights shipped before' if args.with_shipped else ''}, "
          f"card round {card['fine_tuning'][-1]['round']}; now run "
          f"python -m asr_core.evaluate --model {args.into} --tune && "
          f"python -m asr_core.evaluate --model {args.into} --write-card")


if __name__ == "__main__":
    main()
