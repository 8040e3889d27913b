"""Fresh augmentation for every batch, computed on the training device (a GPU when there is one).

The feature caches of asr_core.data hold each clip plus two fixed augmented copies: right for a CPU,
where MFCCs cost as much as a training step. On a GPU a step costs milliseconds, so a long run would
see the same few copies hundreds of times. Here the decoded audio of the training set sits in the
device's memory, and every batch is made afresh:

    int16 samples --speed--> --reverb--> --phone band--> --noise--> --gain--> MFCC (as features.mfcc;
                  with vtlp, through a filterbank warped per clip) --per-utterance normalization-->
                  SpecAugment masks (torchaudio, a new mask per clip)

the same chain as augment.random_augment (and, with vtlp, augment.vtlp_mfcc), batched over padded clips
of similar length.

An *audio pack* carries the training audio to a machine that has no ../shared/data (the lent GPU
machine receives only the repository, 64 MiB in all): Opus files at a low bitrate and a manifest.

    python -m asr_core.onthefly pack .gpu/pack          # here: ~30 MB of Opus from ../shared/data + synth cache
    python -m asr_core.onthefly decode PACK /tmp/audio.safetensors    # there: decode once, for every trainer

scripts/gpu_train.sh runs the GPU side. The same --audio training also runs on a CPU (about 0.85 h of audio per
minute for the LSTM on 2 cores, against 1.4 from the MFCC caches).
"""
from __future__ import annotations

import argparse
import copy
import csv
import os
import random
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from safetensors.torch import load_file, save_file

from . import augment, features
from .audio import SAMPLE_RATE
from .vocab import encode

HOP = features.HOP_LENGTH
SPEEDS = (0.9, 0.95, 1.0, 1.05, 1.1)


# ---- the pack: Opus files + manifest.tsv (file, corpus, split, speaker, text) -------------------------

def write_pack(rows: list[tuple], out: Path, bitrate_k: dict[str, int], jobs: int = 2) -> Path:
    """rows: (source path, corpus, split, speaker, text). Each clip becomes 16 kHz mono Opus at the
    corpus's bitrate (kb/s) through ffmpeg, called with an argument list (no shell)."""
    out.mkdir(parents=True, exist_ok=True)
    todo = [(str(src), str(out / f"{i:05d}.opus"), bitrate_k.get(corpus, 16))
            for i, (src, corpus, *_rest) in enumerate(rows)]
    with ProcessPoolExecutor(jobs) as ex:
        ok = list(ex.map(_encode, todo, chunksize=16))
    with open(out / "manifest.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        for (src, corpus, split, speaker, text), (_, dst, _), good in zip(rows, todo, ok):
            if good:
                w.writerow([Path(dst).name, corpus, split, speaker, text])
    return out


def _encode(job) -> bool:
    src, dst, kbps = job
    r = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-ac", "1", "-ar", str(SAMPLE_RATE),
                        "-c:a", "libopus", "-b:a", f"{kbps}k", "-application", "voip", dst], capture_output=True)
    return r.returncode == 0


def read_manifest(pack: Path) -> list[list[str]]:
    with open(pack / "manifest.tsv", newline="") as f:
        return [r for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _decode(path: str) -> np.ndarray:
    import soundfile as sf
    x, sr = sf.read(path, dtype="int16", always_2d=True)
    assert sr == SAMPLE_RATE, (path, sr)
    return x[:, 0]


def decode_pack(pack: Path, out: Path, jobs: int = os.cpu_count() or 1) -> Path:
    """Decode every clip once into one safetensors file: int16 samples, offsets, labels, split (0 train, 1 eval)."""
    rows = read_manifest(pack)
    with ProcessPoolExecutor(jobs) as ex:
        waves = list(ex.map(_decode, [str(pack / r[0]) for r in rows], chunksize=32))
    labels = [encode(r[4]) for r in rows]
    keep = [i for i, (w, l) in enumerate(zip(waves, labels)) if l and len(w) // HOP + 1 >= 2 * len(l) + 1]
    corpora = sorted({rows[i][1] for i in keep})
    save_file({
        "samples": torch.from_numpy(np.concatenate([waves[i] for i in keep])),
        "sample_lengths": torch.tensor([len(waves[i]) for i in keep]),
        "labels": torch.tensor([c for i in keep for c in labels[i]], dtype=torch.int16),
        "label_lengths": torch.tensor([len(labels[i]) for i in keep]),
        "eval": torch.tensor([rows[i][2] != "train" for i in keep]),
        "corpus": torch.tensor([corpora.index(rows[i][1]) for i in keep]),
    }, out, metadata={"corpora": ",".join(corpora)})
    return out


def corpus_hours(path: Path) -> dict:
    """Clips and hours per corpus and split of a decoded pack (for the model card)."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        corpora = f.metadata()["corpora"].split(",")
        n, c, e = f.get_tensor("sample_lengths"), f.get_tensor("corpus"), f.get_tensor("eval")
    out = {}
    for k, name in enumerate(corpora):
        for split, flag in (("train", False), ("eval", True)):
            m = (c == k) & (e == flag)
            if m.any():
                out[f"{name}/{split}"] = {"clips": int(m.sum()), "hours": round(float(n[m].sum()) / SAMPLE_RATE / 3600, 2)}
    return out


# ---- the audio set on the device --------------------------------------------------------------------

class AudioSet:
    """Decoded clips on one device: item i is (int16 samples, label ids); `frames[i]` its MFCC frame count."""

    def __init__(self, path: Path, device: torch.device, split: str = "train"):
        d = load_file(path)
        so = np.concatenate([[0], np.cumsum(d["sample_lengths"].numpy())])
        lo = np.concatenate([[0], np.cumsum(d["label_lengths"].numpy())])
        pick = np.flatnonzero(d["eval"].numpy() == (split != "train"))
        samples = d["samples"].to(device)
        self.waves = [samples[so[i]:so[i + 1]] for i in pick]
        self.labels = [d["labels"][lo[i]:lo[i + 1]].long() for i in pick]
        self.frames = [int(d["sample_lengths"][i]) // HOP + 1 for i in pick]
        self.device = device

    def __len__(self):
        return len(self.waves)

    def hours(self) -> float:
        return sum(len(w) for w in self.waves) / SAMPLE_RATE / 3600


class Batcher:
    """Turns a list of clip indices into a training batch (x (B, T, 40), frame lengths, labels, label lengths)."""

    def __init__(self, audio: AudioSet, augment: bool = True, specaugment: bool = True, seed: int = 0,
                 p_clean: float = 0.2, vtlp: tuple[float, float] | None = None):
        """vtlp = (low, high): each clip's MFCCs also go through a mel filterbank warped by alpha ~ U(low, high)
        (augment.vtlp_filterbanks), except a share p_clean of clips, drawn apart from the waveform's clean ones."""
        self.audio, self.augment, self.p_clean, self.vtlp = audio, augment, p_clean, vtlp
        self.mfcc = copy.deepcopy(features.mfcc_transform()).to(audio.device)
        self.freq = T.FrequencyMasking(8, iid_masks=True)
        self.time = T.TimeMasking(30, iid_masks=True, p=0.2)
        self.specaugment = specaugment
        self.g = torch.Generator(audio.device).manual_seed(seed)

    def __call__(self, idx: list[int], masked: bool = True):
        """masked=False leaves out SpecAugment (a teacher hears the clean features; then `mask` them)."""
        waves = [self.audio.waves[i].float() / 32768 for i in idx]
        lengths = torch.tensor([len(w) for w in waves], device=self.audio.device)
        w = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
        fb = None
        if self.augment:
            w, lengths = augment_batch(w, lengths, self.g, self.p_clean)
            if self.vtlp:
                lo, hi = self.vtlp
                u = torch.rand(2, len(idx), generator=self.g, device=self.audio.device)
                fb = augment.vtlp_filterbanks(torch.where(u[0] < self.p_clean, 1.0, lo + (hi - lo) * u[1]))
        x, xl = mfcc_batch(self.mfcc, w, lengths, fb)
        if masked:
            x = self.mask(x)
        y = torch.cat([self.audio.labels[i] for i in idx])
        yl = torch.tensor([len(self.audio.labels[i]) for i in idx])
        return x, xl.cpu(), y, yl

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """SpecAugment (when on): a frequency mask and two time masks, drawn afresh for each clip of (B, T, 40)."""
        if not self.specaugment:
            return x
        return self.time(self.time(self.freq(x.transpose(1, 2)[:, None])))[:, 0].transpose(1, 2)


def _valid(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None] < lengths[:, None]


def augment_batch(w: torch.Tensor, lengths: torch.Tensor, g: torch.Generator, p_clean: float = 0.2):
    """augment.random_augment for a padded batch (B, L) of clips with the given lengths: each clip
    gets its own random chain (a share p_clean stays clean). Returns the new batch and lengths."""
    B, dev = w.shape[0], w.device

    def rand(*shape):
        return torch.rand(*shape, generator=g, device=dev)
    clean = rand(B) < p_clean
    # speed: resample each group of clips that drew the same factor; lengths change by 1/factor
    factor = torch.tensor(SPEEDS, device=dev)[(rand(B) * len(SPEEDS)).long().clamp(max=len(SPEEDS) - 1)]
    factor = torch.where(clean, torch.ones_like(factor), factor)
    parts, new_len = [None] * B, lengths.clone()
    for f in SPEEDS:
        rows = torch.nonzero(factor == f).flatten().tolist()
        if not rows:
            continue
        group = w[rows]
        if f != 1.0:
            group = AF.resample(group, int(SAMPLE_RATE * f), SAMPLE_RATE)
            new_len[rows] = torch.ceil(lengths[rows] / f).long().clamp(max=group.shape[1])
        for k, r in enumerate(rows):
            parts[r] = group[k]
    w = torch.nn.utils.rnn.pad_sequence(parts, batch_first=True)
    L = w.shape[1]
    valid = _valid(new_len, L)
    w = w * valid
    peak = w.abs().amax(1, keepdim=True) + 1e-8
    # reverberation: exponentially decaying noise, RT60 0.2-0.8 s, plus a direct path
    rev = (rand(B) < 0.4) & ~clean
    if rev.any():
        n = int(0.8 * SAMPLE_RATE)
        rt60 = 0.2 + 0.6 * rand(B, 1)
        t = torch.arange(n, device=dev)[None] / SAMPLE_RATE
        rir = torch.randn(B, n, generator=g, device=dev) * torch.exp(-6.9 * t / rt60) * (t < rt60)
        rir[:, 0] = 1.0 / (0.3 + 0.7 * rand(B))
        rir = rir / rir.norm(dim=1, keepdim=True)
        y = AF.fftconvolve(w, rir)[:, :L] * valid
        y = y / (y.abs().amax(1, keepdim=True) + 1e-8) * peak
        w = torch.where(rev[:, None], y, w)
    # telephone band: down to 8 kHz and back
    phone = (rand(B) < 0.25) & ~clean
    if phone.any():
        y = AF.resample(AF.resample(w, SAMPLE_RATE, 8000), 8000, SAMPLE_RATE)[:, :L]
        y = torch.nn.functional.pad(y, (0, L - y.shape[1]))
        w = torch.where(phone[:, None], y, w)
    # noise at 5-30 dB SNR: white, or brown-ish (integrated, minus its 25 ms running mean)
    noisy = (rand(B) < 0.7) & ~clean
    if noisy.any():
        noise = torch.randn(B, L, generator=g, device=dev)
        brown = noise.cumsum(1)
        brown = brown - torch.nn.functional.avg_pool1d(brown[:, None], 401, 1, 200, count_include_pad=False)[:, 0]
        noise = torch.where((rand(B) < 0.5)[:, None], brown, noise) * valid
        snr = 5 + 25 * rand(B)
        p_sig = (w ** 2).sum(1) / new_len
        p_noise = (noise ** 2).sum(1) / new_len + 1e-12
        scale = torch.sqrt(p_sig / (p_noise * 10 ** (snr / 10)))
        w = torch.where(noisy[:, None], w + noise * scale[:, None], w)
    gain = 0.2 + 0.8 * rand(B, 1)
    w = w * gain / (w.abs().amax(1, keepdim=True) + 1e-8) * valid
    return w, new_len


def mfcc_batch(transform, w: torch.Tensor, lengths: torch.Tensor, fb: torch.Tensor | None = None):
    """features.mfcc for a padded batch: (B, T, 40) normalized over each clip's own frames; padding is 0.
    fb (B, n_freqs, n_mels): a mel filterbank per clip in place of the transform's own (VTLP).

    Two details make each clip's frames equal features.mfcc's: past its end a clip is mirrored (as the
    centred STFT mirrors a lone clip) instead of running into zeros, and the batch goes in as (B, 1, L)
    so that torchaudio's 80 dB floor is set by each clip's loudest frame, not by the batch's."""
    half = transform.MelSpectrogram.spectrogram.n_fft // 2
    n = lengths // HOP + 1
    k = torch.arange(half, device=w.device)
    w = torch.nn.functional.pad(w, (0, half))
    w = w.scatter(1, lengths[:, None] + k, w.gather(1, (lengths[:, None] - 2 - k).clamp(min=0)))
    with torch.no_grad():
        if fb is None:
            feats = transform(w[:, None])
        else:  # torchaudio's MFCC.forward, with the filterbank's product taken per clip
            power = transform.MelSpectrogram.spectrogram(w[:, None])  # (B, 1, n_freqs, T)
            mel = torch.matmul(power.transpose(-1, -2), fb[:, None]).transpose(-1, -2)
            feats = torch.matmul(transform.amplitude_to_DB(mel).transpose(-1, -2), transform.dct_mat).transpose(-1, -2)
        feats = feats[:, 0].transpose(1, 2)[:, :int(n.max())]  # (B, T, 40)
    valid = _valid(n, feats.shape[1])[..., None]
    count = n[:, None, None].float()
    mean = (feats * valid).sum(1, keepdim=True) / count
    var = (((feats - mean) * valid) ** 2).sum(1, keepdim=True) / (count - 1).clamp(min=1)
    return ((feats - mean) / (var.sqrt() + 1e-5)) * valid, n


# ---- command line ------------------------------------------------------------------------------------

def default_rows(seed: int = 0, synth_per_voice: int = 60, eval_count: int = 200) -> list[tuple]:
    """What the GPU run trains on: speechocean762 train minus the LM's dev speakers, LJ Speech train,
    FSDD train, a share of the synthesized training voices; plus `eval_count` spread speechocean762
    test clips for the learning curve (never trained on)."""
    from . import data, lm
    dev = set(lm.dev_speakers())
    rows = [(u.path, "speechocean762", "train", u.speaker, u.text) for u in data.speechocean("train")
            if u.speaker not in dev]
    rows += [(u.path, "ljspeech", "train", u.speaker, u.text) for u in data.ljspeech("train")]
    rows += [(u.path, "fsdd", "train", u.speaker, u.text) for u in data.fsdd("train")]
    synth = data.synthesized("train")
    by_voice: dict[str, list] = {}
    for u in synth:
        by_voice.setdefault(u.speaker, []).append(u)
    rng = random.Random(seed)
    for voice, us in sorted(by_voice.items()):
        rows += [(u.path, "synth", "train", u.speaker, u.text) for u in rng.sample(us, min(synth_per_voice, len(us)))]
    test = data.speechocean("test")
    rows += [(u.path, "speechocean762", "eval", u.speaker, u.text) for u in test[:: max(1, len(test) // eval_count)][:eval_count]]
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="encode the training audio as Opus + manifest")
    a.add_argument("out", type=Path)
    a.add_argument("--synth-per-voice", type=int, default=60)
    a.add_argument("--eval-count", type=int, default=200,
                   help="held-out speechocean762 test clips for the learning curve (fewer leave room for a teacher)")
    a.add_argument("--jobs", type=int, default=2)
    b = sub.add_parser("decode", help="decode a pack once into a safetensors file")
    b.add_argument("pack", type=Path)
    b.add_argument("out", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        rows = default_rows(synth_per_voice=args.synth_per_voice, eval_count=args.eval_count)
        out = write_pack(rows, args.out, {"speechocean762": 16, "ljspeech": 12, "fsdd": 12, "synth": 12}, args.jobs)
        size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
        print(f"{out}: {len(read_manifest(out))} clips, {size:.1f} MB")
    else:
        out = decode_pack(args.pack, args.out)
        print(f"{out}: {out.stat().st_size / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
