"""Synthesized training speech: many espeak-ng and flite voices reading text.

    python -m asr_core.synth --count 3080
    python -m asr_core.synth --wide --seed 1 --count 3000     # more voices: every espeak-ng variant, flite pitches

Clip i's voice, sentence, variant, rate and pitch follow from the seed alone, so a run that was interrupted
and started again (it skips the clips its manifest already lists) makes the same clips as one that was not.

Writes 16 kHz FLAC clips and a manifest (id, voice, split, text) to the cache folder outside the repo
(ASR_LAB_CACHE, default ~/.cache/asr-lab/synth). Voices in HELD_OUT_VOICES are never trained on; they make
the "held-out synthesized voices" test set. Programs are called with argument lists, never through a shell.

--wide makes a second, training-only set of many more voices (folder synth-wide, clips wide00000...; its
cache: python -m asr_core.data --only synthwide/train): the training base voices only, each espeak-ng clip
with any of the voice variants this espeak-ng installs (101 in espeak-ng 1.51, against 13) at a wider rate
and pitch, each flite clip at a random mean pitch; its manifest adds a fifth column, the clip's settings.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import prepare
from .vocab import normalize_text

CACHE = Path(os.environ.get("ASR_LAB_CACHE", Path.home() / ".cache" / "asr-lab"))
DATA = Path(os.environ.get("ASR_LAB_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

ESPEAK_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029",
                 "en-us-nyc", "en-gb-x-gbcwmd"]
ESPEAK_VARIANTS = ["", "+m1", "+m2", "+m3", "+m4", "+m5", "+m6", "+m7", "+f1", "+f2", "+f3", "+f4", "+f5"]
FLITE_VOICES = ["kal16", "awb", "rms", "slt"]
HELD_OUT_VOICES = {"espeak:en-gb-x-gbcwmd", "flite:slt"}  # base voices never used in training

_DIGITS = "zero one two three four five six seven eight nine".split()


def texts(rng: random.Random) -> list[str]:
    """LJ Speech's normalized sentences (short ones) plus digit strings and word lists."""
    lines = []
    meta = DATA / "ljspeech-subset" / "metadata.csv"
    with open(meta, encoding="utf-8") as f:
        for row in f:
            parts = row.rstrip("\n").split("|")
            t = normalize_text(parts[-1])
            if 2 <= len(t.split()) <= 18:
                lines.append(t)
    for _ in range(len(lines) // 8):
        lines.append(" ".join(rng.choice(_DIGITS) for _ in range(rng.randint(1, 6))))
    return lines


def all_variants() -> list[str]:
    """Every voice variant this espeak-ng installs (its data folder's voices/!v), sorted, plus none."""
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
    folder = Path(out.split("Data at:")[1].strip()) / "voices" / "!v"
    return [""] + sorted("+" + p.name for p in folder.iterdir() if p.is_file())


def command(voice: str, text: str, wav: str, rng: random.Random, variants: list[str] | None = None) -> list[str]:
    """The synthesizer's argument list for one clip, with this clip's random voice variant, rate and pitch.
    `variants` (the --wide set): draw from these espeak variants, at a wider rate and pitch, and give
    flite a random mean pitch."""
    engine, name = voice.split(":", 1)
    if engine == "espeak":
        if variants:
            return ["espeak-ng", "-v", name + rng.choice(variants), "-s", str(rng.randint(110, 220)),
                    "-p", str(rng.randint(10, 90)), "-w", wav, text]
        variant = rng.choice(ESPEAK_VARIANTS)
        return ["espeak-ng", "-v", name + variant, "-s", str(rng.randint(125, 195)),
                "-p", str(rng.randint(25, 75)), "-w", wav, text]
    stretch = ["--setf", f"duration_stretch={rng.uniform(0.85, 1.25):.2f}"]
    if variants:
        stretch += ["--setf", f"int_f0_target_mean={rng.randint(70, 210)}"]
    return ["flite", "-voice", name, *stretch, "-t", text, "-o", wav]


def synth_one(voice: str, text: str, out: Path, rng: random.Random, variants: list[str] | None = None) -> str:
    """Make one clip; returns the synthesizer's settings for it (its arguments less text and file)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        args = command(voice, text, tmp.name, rng, variants)
        subprocess.run(args, check=True, capture_output=True, timeout=60)
        data, rate = sf.read(tmp.name)
    clip = prepare(data, rate)
    sf.write(out, clip.samples, 16000, format="FLAC")
    return " ".join(a for a in args[1:] if a not in (text, tmp.name, "-w", "-t", "-o"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=3080, help="clips (3080: the set the shipped cards measure)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wide", action="store_true",
                   help="the training-only set of many more voices (default folder synth-wide, ids wide00000...)")
    p.add_argument("--out", type=Path, help="folder (default: the cache's synth, or synth-wide with --wide)")
    args = p.parse_args(argv)
    out = args.out or CACHE / ("synth-wide" if args.wide else "synth")
    rng = random.Random(args.seed)
    out.mkdir(parents=True, exist_ok=True)
    lines = texts(rng)
    voices = [f"espeak:{v}" for v in ESPEAK_VOICES] + [f"flite:{v}" for v in FLITE_VOICES]
    variants = None
    if args.wide:
        voices = [v for v in voices if v not in HELD_OUT_VOICES]
        variants = all_variants()
    manifest = out / "manifest.tsv"
    done = set()
    if manifest.exists():
        done = {r[0] for r in csv.reader(open(manifest), delimiter="\t")}
    with open(manifest, "a", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        for i in range(args.count):
            voice = voices[i % len(voices)]
            text = rng.choice(lines)
            uid = f"{'wide' if args.wide else 'synth'}{i:05d}"
            if uid in done:   # made by an earlier, interrupted run: draw what it drew, so later clips match
                command(voice, text, "", rng, variants)
                continue
            try:
                settings = synth_one(voice, text, out / f"{uid}.flac", rng, variants)
            except Exception as e:  # a voice missing on this machine: skip it
                print("skip", uid, voice, e)
                continue
            w.writerow([uid, voice, "test" if voice in HELD_OUT_VOICES else "train", text]
                       + ([settings] if args.wide else []))
            if i % 200 == 0:
                f.flush()
                print(f"{i}/{args.count}", flush=True)


if __name__ == "__main__":
    main()
