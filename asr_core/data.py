"""Corpora on disk (../shared/data and the synthesized cache) and the training feature cache.

Every corpus yields Utterance(uid, path, text, speaker). Held-out splits never share a speaker (or
synthesized voice) with training, except where the corpus has a single speaker (LJ Speech), which is
labelled as such wherever a number is reported.

    python -m asr_core.data --augment-copies 2    # builds ~/.cache/asr-lab/features/*.safetensors
    python -m asr_core.data --augment-copies 3 --seed 11 --only speechocean762/train   # fresh draws, *-x3s11
    python -m asr_core.data --seed 5 --only speechocean762/train --without-dev   # *-x2s5-nodev: no LM dev speakers
    python -m asr_core.data --seed 14 --vtlp --only ljspeech/train   # *-x2s14-vtlp: copies also VTLP-warped
    python -m asr_core.data --seed 16 --vtlp 0.85 1.15 --only ljspeech/train   # *-x2s16-vtlp0.85-1.15: a wider warp
"""
from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from . import audio, features
from .augment import random_augment, vtlp_mfcc
from .synth import CACHE, DATA
from .vocab import encode, normalize_text

FEATURES = CACHE / "features"
VTLP_RANGE = (0.9, 1.1)  # Jaitly & Hinton's range of warp factors
_DIGITS = "zero one two three four five six seven eight nine".split()


@dataclass(frozen=True)
class Utterance:
    uid: str
    path: str
    text: str
    speaker: str


def speechocean(split: str) -> list[Utterance]:
    root = DATA / "speechocean762"
    table = lambda name: dict(l.rstrip("\n").split(None, 1) for l in open(root / split / name) if l.strip())
    text, wav, spk = table("text"), table("wav.scp"), table("utt2spk")
    return [Utterance(u, str(root / wav[u]), normalize_text(text[u]), spk[u]) for u in sorted(text)]


AGE_GROUPS = (("children (6-12)", 0, 12), ("teenagers (13-17)", 13, 17), ("adults (18+)", 18, 999))


def age_groups(spk2age: Path) -> dict[str, str]:
    """speaker -> age group, from a Kaldi-style `speaker age` table (speechocean762's spk2age)."""
    out = {}
    for line in open(spk2age):
        if line.strip():
            spk, age = line.split()
            out[spk] = next(name for name, lo, hi in AGE_GROUPS if lo <= int(age) <= hi)
    return out


def ljspeech(split: str) -> list[Utterance]:
    """One speaker: every 5th clip (sorted) is 'test', the rest 'train'."""
    root = DATA / "ljspeech-subset"
    meta = {r[0]: r[-1] for r in csv.reader(open(root / "metadata.csv", encoding="utf-8"), delimiter="|",
                                            quoting=csv.QUOTE_NONE)}
    ids = sorted(p.stem for p in (root / "wavs").glob("*.opus"))
    pick = [u for i, u in enumerate(ids) if (i % 5 == 4) == (split == "test")]
    return [Utterance(u, str(root / "wavs" / f"{u}.opus"), normalize_text(meta[u]), "LJ") for u in pick]


def fsdd(split: str) -> list[Utterance]:
    """The dataset's own split: recordings with index 0-4 are 'test'."""
    out = []
    for p in sorted((DATA / "fsdd" / "recordings").glob("*.wav")):
        digit, speaker, index = p.stem.split("_")
        if (int(index) < 5) == (split == "test"):
            out.append(Utterance(p.stem, str(p), _DIGITS[int(digit)], speaker))
    return out


def synthesized(split: str, folder: str = "synth") -> list[Utterance]:
    """Voices in synth.HELD_OUT_VOICES make 'test'; the manifest records which."""
    root = CACHE / folder
    if not (root / "manifest.tsv").exists():
        return []
    rows = csv.reader(open(root / "manifest.tsv"), delimiter="\t")
    return [Utterance(r[0], str(root / f"{r[0]}.flac"), r[3], r[1]) for r in rows
            if r[2] == split and (root / f"{r[0]}.flac").exists()]


def synthesized_wide(split: str) -> list[Utterance]:
    """The --wide set (python -m asr_core.synth --wide): training voices only, so its 'test' is empty."""
    return synthesized(split, "synth-wide")


CORPORA = {"speechocean762": speechocean, "ljspeech": ljspeech, "fsdd": fsdd, "synth": synthesized,
           "synthwide": synthesized_wide}


def load_16k(path: str) -> np.ndarray:
    return audio.load(path).samples


def build_cache(corpus: str, split: str, augment_copies: int = 0, seed: int = 0, limit: int | None = None,
                without: frozenset[str] = frozenset(), vtlp: tuple[float, float] | None = None) -> Path:
    """Cache one corpus split as FEATURES/{corpus}-{split}-x{copies}.safetensors (with s{seed} after it when the
    augmentation seed is not 0, so fresh draws sit beside the old ones; -vtlp when the copies are also
    VTLP-warped, -vtlp{low}-{high} for a range other than VTLP_RANGE). Speakers in `without` are left out and
    the name ends in -nodev (used for the LM's tuning speakers, asr_core.lm.dev_speakers)."""
    utts = [u for u in CORPORA[corpus](split) if u.speaker not in without][:limit]
    out = FEATURES / (f"{corpus}-{split}-x{augment_copies}{f's{seed}' if seed else ''}{vtlp_suffix(vtlp)}"
                      f"{'-nodev' if without else ''}.safetensors")
    return write_cache(utts, out, augment_copies, seed, desc=f"{corpus}/{split}", vtlp=vtlp)


def add_vtlp_argument(p: argparse.ArgumentParser, what: str, after: str) -> None:
    """--vtlp [LOW HIGH], shared by asr_core.data (cached draws) and asr_core.train (fresh copies on the device)."""
    p.add_argument("--vtlp", nargs="*", type=float, metavar="LOW HIGH",
                   help=f"{what} by alpha ~ U(LOW, HIGH) (VTLP), by default U{VTLP_RANGE}; {after}")


def vtlp_range(p: argparse.ArgumentParser, values: list[float] | None) -> tuple[float, float] | None:
    """The warp factors' range from --vtlp's values (None: no --vtlp; none given: VTLP_RANGE)."""
    if values is None:
        return None
    if len(values) not in (0, 2):
        p.error("--vtlp takes no numbers (the default range) or two, LOW HIGH")
    if values and not 0.5 < values[0] <= values[1] < 2:
        p.error(f"--vtlp {values[0]:g} {values[1]:g}: want 0.5 < LOW <= HIGH < 2")
    return tuple(values) or VTLP_RANGE


def vtlp_suffix(vtlp: tuple[float, float] | None) -> str:
    if not vtlp:
        return ""
    return "-vtlp" if tuple(vtlp) == VTLP_RANGE else f"-vtlp{vtlp[0]:g}-{vtlp[1]:g}"


def write_cache(utts: list[Utterance], out: Path, augment_copies: int = 0, seed: int = 0, desc: str = "",
                vtlp: tuple[float, float] | None = None) -> Path:
    """MFCCs of every utterance (plus augmented copies) in one safetensors file: frames, offsets, labels.
    With `vtlp` = (low, high), each augmented copy's MFCCs also go through a warped mel filterbank, alpha
    drawn uniformly from that range (augment.vtlp_mfcc) by a generator of its own, so that the waveforms are
    the same draws as without it; the clean copy is never warped."""
    rng = np.random.default_rng(seed)
    warp_rng = np.random.default_rng([seed, 1])
    feats, labels, flen, llen = [], [], [], []
    for u in tqdm(utts, desc=desc, mininterval=5):
        try:
            x = load_16k(u.path)
        except audio.AudioError:
            continue
        ids = encode(u.text)
        if not ids:
            continue
        for k in range(1 + augment_copies):
            if k == 0:
                f = features.mfcc(x)
            elif vtlp:
                f = vtlp_mfcc(random_augment(x, rng), warp_rng.uniform(*vtlp))
            else:
                f = features.mfcc(random_augment(x, rng))
            if f.shape[0] < 2 * len(ids) + 1:  # CTC needs room for the labels
                continue
            feats.append(f.half())
            labels.append(torch.tensor(ids, dtype=torch.int16))
            flen.append(f.shape[0])
            llen.append(len(ids))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"frames": torch.cat(feats), "labels": torch.cat(labels),
               "frame_lengths": torch.tensor(flen), "label_lengths": torch.tensor(llen)}, out)
    return out


def cache_path(name: str) -> Path:
    """A cache by name (e.g. 'speechocean762-test-x0') in FEATURES, or by its own path."""
    return Path(name) if name.endswith(".safetensors") else FEATURES / f"{name}.safetensors"


class FeatureSet:
    """A cached corpus split in memory: item i is (frames (T, 40) float32, label ids)."""

    def __init__(self, *paths: Path):
        self.items = []
        for p in paths:
            d = load_file(p)
            fo = np.concatenate([[0], np.cumsum(d["frame_lengths"].numpy())])
            lo = np.concatenate([[0], np.cumsum(d["label_lengths"].numpy())])
            for i in range(len(d["frame_lengths"])):
                self.items.append((d["frames"][fo[i]:fo[i + 1]], d["labels"][lo[i]:lo[i + 1]].long()))

    def __len__(self):
        return len(self.items)

    def hours(self) -> float:
        return sum(f.shape[0] for f, _ in self.items) / features.FRAMES_PER_SECOND / 3600


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Build the MFCC feature caches used by training and evaluation.")
    p.add_argument("--augment-copies", type=int, default=2, help="augmented copies of each real training clip")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed; not 0 writes *-x{copies}s{seed} caches")
    p.add_argument("--only", nargs="*", help="corpus/split names, e.g. speechocean762/train")
    p.add_argument("--without-dev", action="store_true",
                   help="leave out the speechocean762 train speakers the LM weights are tuned on (*-nodev caches)")
    add_vtlp_argument(p, "also warp each augmented copy's frequencies",
                      "*-vtlp caches, or *-vtlpLOW-HIGH for another range")
    args = p.parse_args(argv)
    vtlp = vtlp_range(p, args.vtlp)
    without = frozenset()
    if args.without_dev:
        from .lm import dev_speakers  # lm reads this module's corpora
        without = frozenset(dev_speakers())
    jobs = [("speechocean762", "train", args.augment_copies), ("ljspeech", "train", args.augment_copies),
            ("fsdd", "train", 1), ("synth", "train", 0), ("synthwide", "train", 0),
            ("speechocean762", "test", 0), ("ljspeech", "test", 0), ("fsdd", "test", 0), ("synth", "test", 0)]
    for corpus, split, copies in jobs:
        if args.only and f"{corpus}/{split}" not in args.only:
            continue
        if corpus == "synthwide" and not args.only:
            continue  # made only when asked for: python -m asr_core.synth --wide first
        print(build_cache(corpus, split, copies, seed=args.seed,
                          without=without if (corpus, split) == ("speechocean762", "train") else frozenset(),
                          vtlp=vtlp if copies else None), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    main()
