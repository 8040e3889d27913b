"""Train an acoustic model with CTC.

    python -m asr_core.train --model lstm --epochs 8
    torchrun --standalone --nproc-per-node 2 -m asr_core.train --model gru ...   # data-parallel (gloo on CPU, nccl on GPU)
    python -m asr_core.train --model lstm --audio /tmp/audio.safetensors --init-from lstm   # GPU: fresh augmentation
    python -m asr_core.train --model rnn --init-from rnn --teacher gru --distill 1.0   # learn from a teacher too
    python -m asr_core.train --model lstm --layers 3 --init-from lstm   # grow the LSTM a layer (models.deepened)

Reads the MFCC caches built by `python -m asr_core.data` (or, with --audio, decoded audio that
asr_core.onthefly augments afresh for every batch on the device), trains with CTC, and writes
assets/models/NAME.safetensors + NAME.json (config, data, parameter count, time, hardware, learning curve).
Speed matters most on a 2-core CPU, so: batches of similar length (little padding), the first epoch
shortest-first (SortaGrad, DeepSpeech 2), a warm-up to a high peak learning rate then cosine decay,
SpecAugment masks, gradient clipping. Checkpoints every few minutes; --resume continues bit-for-bit.

Distillation (--teacher NAME --distill W): a shipped model's per-frame distributions on each cached
utterance (computed once, before SpecAugment, by the teacher's app path, and kept on disk for the next
run: TEACHER_CACHE) become a second target: the
loss is CTC + W x the mean over real frames of KL(teacher || student). A causal teacher (the GRU) for a
causal student (the RNN) keeps the two models' timing compatible: both can only emit what they have heard.
A bidirectional teacher (the LSTM) has heard the future: --teacher-delay D lets the causal student answer D
frames (10 ms each) after it; CTC's own loss does not care when a character is emitted. --distill-focus
weights each frame's KL by the teacher's probability of a character there: most frames are blank, and a
plain mean lets them drown out the few frames where a small student drops the teacher's characters.
With --audio the teacher runs alongside the student instead (on the GPU): it hears each freshly augmented
batch before SpecAugment masks it, so its targets are as new as the audio.
Several teachers (--teacher A B, cached MFCCs only) teach as one: per frame, the mean of their
log-probabilities, renormalized (a product of experts), which keeps the characters they agree on sharp.

--ema D keeps an exponential moving average of the weights (torch.optim.swa_utils, after every step:
avg = D avg + (1 - D) w) and writes it as the model: while the learning rate is high, the average of a
noisy trajectory's last ~1/(1 - D) steps can sit nearer the middle of the basin than any one step (once the
schedule has annealed, the last step may be as good: docs/training-log.md, the forty-third CPU round). The
last step's own weights are written beside it as NAME-raw, so that one run measures what the average did.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from . import ctc, data, features, models, onthefly
from .augment import SpecAugment
from .vocab import BLANK, decode

ARCHS = {
    "rnn": {"type": "rnn", "input_size": 40, "hidden_size": 256, "num_classes": 29},
    "lstm": {"type": "lstm", "input_size": 40, "hidden_size": 256, "num_layers": 2, "bidirectional": True,
             "dropout": 0.1},
    "gru": {"type": "gru", "input_size": 40, "hidden_size": 320, "num_layers": 3, "bidirectional": False,
            "dropout": 0.1},
}
DEFAULT_TRAIN = ["speechocean762-train-x2", "ljspeech-train-x2", "fsdd-train-x1", "synth-train-x0"]
DEFAULT_EVAL = ["speechocean762-test-x0", "synth-test-x0"]


def epoch_order(epoch: int, seed: int, sortagrad: bool = True) -> random.Random | None:
    """The batch order of an epoch for make_batches: None (shortest first) for SortaGrad's first epoch,
    else a generator seeded by the run's seed and the epoch, so that a resumed run sees the same batches."""
    return None if sortagrad and epoch == 0 else random.Random(seed * 1000 + epoch)


def make_batches(lengths, max_frames: int, rng: random.Random | None) -> list[list[int]]:
    """Group utterances of similar length so that (longest x count) <= max_frames.
    rng=None: shortest first (SortaGrad); otherwise lengths are jittered and batch order shuffled."""
    keys = [l * (1 + 0.1 * rng.random()) if rng else l for l in lengths]
    order = sorted(range(len(lengths)), key=keys.__getitem__)
    batches, cur, longest = [], [], 0
    for i in order:
        longest_new = max(longest, lengths[i])
        if cur and longest_new * (len(cur) + 1) > max_frames:
            batches.append(cur)
            cur, longest_new = [], lengths[i]
        cur.append(i)
        longest = longest_new
    if cur:
        batches.append(cur)
    if rng:
        rng.shuffle(batches)
    return batches


def collate(items, spec: SpecAugment | None):
    feats = [f.float() for f, _ in items]
    if spec is not None:
        feats = [spec(f) for f in feats]
    x = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    xl = torch.tensor([f.shape[0] for f in feats])
    y = torch.cat([l for _, l in items])
    yl = torch.tensor([len(l) for _, l in items])
    return x, xl, y, yl


def weights_path(name: str) -> Path:
    """A shipped model's name (assets/models/NAME.safetensors) or a NAME.safetensors path (its NAME.json card
    beside it, e.g. a trainer's --out-dir output): where --init-from and --teacher find their weights."""
    return Path(name) if name.endswith(".safetensors") else models.MODELS_DIR / f"{name}.safetensors"


TEACHER_CACHE = data.CACHE / "teacher"


@torch.inference_mode()
def teacher_targets(name: str, items, delay: int = 0, keep: bool = True) -> list[torch.Tensor]:
    """(T, 29) float16 log-probabilities of the shipped model `name` (or of a NAME.safetensors path with its
    JSON card beside it, e.g. a trainer's --out-dir output) for each cached utterance (unmasked),
    moved `delay` frames later: the student at frame t learns what the teacher said at t - delay (blank
    before that). A bidirectional teacher has heard the future; a causal student given a few frames of
    delay hears it too before it has to answer.
    They are kept (keep=True) in TEACHER_CACHE under a digest of the teacher's weights, the delay and every
    utterance's features, so the next run with the same teacher and data loads them instead of spending
    minutes recomputing them; any change to either makes a new file."""
    path = weights_path(name)
    key = _teacher_key(path, items, delay)
    kept = TEACHER_CACHE / f"{key}.safetensors" if keep else None
    if kept is not None and kept.exists():
        stored = load_file(kept)
        return list(stored["log_probs"].split(stored["frames"].tolist()))
    teacher = models.fast(path.stem, path.parent)
    out = []
    for f, _ in tqdm(items, desc=f"teacher {name}", mininterval=10):
        lp = teacher(f.float()[None])[0].log_softmax(-1)
        out.append(delayed(lp, delay).half())
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        partial = kept.with_suffix(".partial")  # written whole, then renamed: a run killed mid-write leaves no bad file
        save_file({"log_probs": torch.cat(out), "frames": torch.tensor([o.shape[0] for o in out])}, str(partial),
                  metadata={"teacher": str(path), "delay": str(delay), "utterances": str(len(out))})
        partial.replace(kept)
    return out


def ensemble_targets(names: list[str], items, delay: int = 0) -> list[torch.Tensor]:
    """Several teachers as one: for each utterance, log_softmax of the mean of their (T, 29) log-probabilities
    (each teacher's kept on disk as teacher_targets keeps it), float16 like a single teacher's."""
    if len(names) == 1:
        return teacher_targets(names[0], items, delay)
    per_teacher = [teacher_targets(n, items, delay) for n in names]
    return [models.ensemble([t[i] for t in per_teacher]).half() for i in range(len(items))]


def _teacher_key(path: Path, items, delay: int) -> str:
    """A digest of the teacher's weight file, the delay, and every utterance's MFCCs, in order."""
    h = hashlib.blake2b(digest_size=16)
    h.update(path.read_bytes())
    h.update(f"delay={delay};n={len(items)}".encode())
    for f, _ in items:
        h.update(f.contiguous().numpy().tobytes())
    return h.hexdigest()


def delayed(log_probs: torch.Tensor, delay: int) -> torch.Tensor:
    """(..., T, C) log-probabilities shifted `delay` frames later; the first frames become (almost surely) blank."""
    steps, classes = log_probs.shape[-2:]
    d = min(delay, steps)
    if d <= 0:
        return log_probs
    blank = torch.full((d, classes), -12.0)
    blank[:, BLANK] = 0.0
    blank = blank.log_softmax(-1).to(log_probs).expand(*log_probs.shape[:-2], d, classes)
    return torch.cat([blank, log_probs[..., : steps - d, :]], dim=-2)


def teacher_model(name: str) -> torch.nn.Module:
    """The float model that teaches alongside training on --audio: a shipped name or a NAME.safetensors path."""
    path = weights_path(name)
    return copy.deepcopy(models.load(path.stem, path.parent))  # its own copy: the trainer moves it to the device


def distill_loss(student_log_probs: torch.Tensor, teacher_log_probs: torch.Tensor, lengths: torch.Tensor,
                 focus: bool = False) -> torch.Tensor:
    """Mean over the real (unpadded) frames of KL(teacher || student); both (B, T, C) log-probabilities.
    focus=True: a weighted mean, each frame weighted by the teacher's probability of a character there
    (1 - P(blank)), so the frames where the teacher speaks count, not the long blank stretches between."""
    mask = (torch.arange(student_log_probs.shape[1])[None] < lengths[:, None]).to(student_log_probs.device)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="none").sum(-1)
    weight = mask * (1 - teacher_log_probs[..., BLANK].exp()) if focus else mask.float()
    return (kl * weight).sum() / weight.sum().clamp_min(1e-6)


def lr_at(step: int, progress: float, peak: float, warmup: int) -> float:
    """Linear warm-up to the peak, then cosine decay to 3% of it as progress goes from 0 to 1."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.inference_mode()
def greedy_cer(model, fs: data.FeatureSet, device, limit: int = 300) -> float:
    """Character error rate of best-path decoding on (a fixed spread-out subset of) a held-out set."""
    import jiwer
    model.eval()
    step = max(1, len(fs) // limit)
    refs, hyps = [], []
    for f, l in fs.items[::step][:limit]:
        lp = model(f.float()[None].to(device))[0].cpu()
        hyps.append(ctc.greedy(lp.numpy()).text or "-")
        refs.append(decode(l.tolist()))
    model.train()
    return float(jiwer.cer(refs, hyps))


def save_checkpoint(path: Path, model, opt, state: dict, ema: AveragedModel | None = None) -> None:
    """Model, optimizer (and weight-average) tensors in safetensors, the rest (step, rng) in JSON: nothing pickled."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()})
    for i, (pid, st) in enumerate(opt.state_dict()["state"].items()):
        for k, v in st.items():
            tensors[f"opt.{pid}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    save_file(tensors, path / "ckpt.tmp")
    os.replace(path / "ckpt.tmp", path / "ckpt.safetensors")
    (path / "state.json").write_text(json.dumps(state, indent=1))


def load_checkpoint(path: Path, model, opt, ema: AveragedModel | None = None) -> dict:
    tensors = load_file(path / "ckpt.safetensors")
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    averaged = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    if ema is not None and averaged:  # a run checkpointed without --ema starts its average where it resumes
        ema.load_state_dict(averaged)
    sd = opt.state_dict()
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            sd["state"].setdefault(int(pid), {})[name] = v
    opt.load_state_dict(sd)
    return json.loads((path / "state.json").read_text())


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, checked (argparse exits with a message on a bad one)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(ARCHS), required=True)
    p.add_argument("--name", help="output name in assets/models (default: the model type)")
    p.add_argument("--config", type=Path, help="JSON file overriding any option below and 'arch'")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=300, help="warm-up steps")
    p.add_argument("--batch-frames", type=int, default=16000, help="padded frames per batch (100 = 1 s)")
    p.add_argument("--clip", type=float, default=5.0, help="gradient norm clip")
    p.add_argument("--no-specaugment", action="store_true")
    p.add_argument("--no-sortagrad", action="store_true",
                   help="shuffle the first epoch too (a fine-tune from trained weights needs no shortest-first start)")
    p.add_argument("--train", nargs="+", default=DEFAULT_TRAIN, help="feature caches (names or paths) to train on")
    p.add_argument("--eval", nargs="+", default=DEFAULT_EVAL, help="held-out caches for the learning curve")
    p.add_argument("--eval-limit", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--bf16", action="store_true",
                   help="run the network's matrix products in bfloat16 (torch.autocast; weights, loss and optimizer "
                        "stay float32); faster on CPUs with native bf16 (AVX-512 BF16, AMX): python -m asr_core.bench "
                        "--train-step times it per model")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="write an exponential moving average of the weights (e.g. 0.9995: about the last 2,000 "
                        "steps); the last step's weights go beside it as NAME-raw")
    p.add_argument("--max-minutes", type=float, default=0, help="stop early (and still write the model) after this long")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (smoke tests)")
    p.add_argument("--checkpoint-minutes", type=float, default=10, help="measure and checkpoint this often")
    p.add_argument("--ckpt-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--out-dir", type=Path, default=models.MODELS_DIR)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--audio", type=Path, help="decoded audio pack (asr_core.onthefly): train on fresh augmentations "
                   "of it made on the device for every batch, and draw the learning curve on its held-out clips")
    data.add_vtlp_argument(p, "with --audio: also warp each fresh copy's frequencies",
                           "the cached MFCCs have their own *-vtlp draws (asr_core.data --vtlp)")
    p.add_argument("--init-from", help="start from these weights (a shipped model's name or a .safetensors path)")
    p.add_argument("--layers", type=int, help="recurrent layers (default: the model's); an LSTM given --init-from "
                                              "weights with fewer layers grows new near-identity top layers")
    p.add_argument("--teacher", nargs="+", help="a shipped model (or a NAME.safetensors with its NAME.json card beside "
                   "it) whose per-frame distributions are a second target (distillation); several: their log-probabilities "
                   "averaged (cached MFCCs only)")
    p.add_argument("--distill", type=float, default=1.0, help="weight of the KL term when --teacher is given")
    p.add_argument("--distill-focus", action="store_true",
                   help="weight each frame's KL by the teacher's probability of a character there")
    p.add_argument("--teacher-delay", type=int, default=0,
                   help="frames the student answers after the teacher (a causal student of a bidirectional teacher)")
    args = p.parse_args(argv)
    if args.layers and args.model == "rnn":
        p.error("--layers: the textbook RNN keeps its one layer (SimpleASR_RNN)")
    if (args.distill_focus or args.teacher_delay) and not args.teacher:
        p.error("--distill-focus and --teacher-delay shape a teacher's targets: give --teacher too")
    args.vtlp = data.vtlp_range(p, args.vtlp)
    if not 0 <= args.ema < 1:
        p.error("--ema: a decay in [0, 1), e.g. 0.9995 (0: no average)")
    if args.vtlp and not args.audio:
        p.error("--vtlp warps the fresh copies of --audio; for cached MFCCs make *-vtlp draws (asr_core.data --vtlp)")
    if args.teacher and len(args.teacher) > 1 and args.audio:
        p.error("several teachers teach from cached MFCCs only: --audio runs one teacher alongside the student")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    arch = dict(ARCHS[args.model])
    if args.config:
        over = json.loads(args.config.read_text())
        arch.update(over.pop("arch", {}))
        for k, v in over.items():
            setattr(args, k.replace("-", "_"), v)
    if args.layers:
        arch["num_layers"] = args.layers
    name = args.name or args.model

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if torch.cuda.is_available() else torch.device("cpu")
    if distributed:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    if args.audio:
        train = onthefly.AudioSet(args.audio, device, "train")
        batcher = onthefly.Batcher(train, specaugment=not args.no_specaugment, seed=args.seed * 100 + rank,
                                   vtlp=args.vtlp)
        held = onthefly.AudioSet(args.audio, torch.device("cpu"), "eval")
        held_name = "+".join(k.split("/")[0] for k in onthefly.corpus_hours(args.audio) if k.endswith("/eval"))
        evals = {f"{held_name}-test-pack": data.FeatureSet()} if len(held) else {}
        for fs in evals.values():  # the pack's held-out clips (test speakers), clean, for the learning curve
            fs.items = [(features.mfcc(w.float().numpy() / 32768), l) for w, l in zip(held.waves, held.labels)]
        lengths = train.frames
    else:
        train = data.FeatureSet(*[data.cache_path(n) for n in args.train])
        evals = {Path(n).stem: data.FeatureSet(data.cache_path(n)) for n in args.eval if data.cache_path(n).exists()}
        lengths = [f.shape[0] for f, _ in train.items]
    # a teacher's targets: computed once for the cached MFCCs, or for every fresh batch of --audio
    targets = ensemble_targets(args.teacher, train.items, args.teacher_delay) if args.teacher and not args.audio else None
    online = teacher_model(args.teacher[0]).to(device) if args.teacher and args.audio else None
    model = models.build({"arch": arch})
    if args.init_from:
        weights = {k: v.float() for k, v in load_file(weights_path(args.init_from)).items()}  # float16 copies from a GPU round too
        if arch["type"] == "lstm" and f"rnn.weight_ih_l{arch['num_layers'] - 1}" not in weights:
            weights = models.deepened(weights, arch)  # a deeper LSTM that starts where the shallow one stood
        model.load_state_dict(weights)
    model = model.to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-2)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(args.ema)) if args.ema else None
    written = ema.module if ema is not None else model  # the weights the run writes as NAME
    spec = None if args.no_specaugment else SpecAugment()
    steps_per_epoch = len(make_batches(lengths, args.batch_frames, None)) // world
    total = steps_per_epoch * args.epochs
    ckpt = args.ckpt_dir / name
    state = {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0, "audio_hours": 0.0, "curve": []}
    if args.resume and (ckpt / "state.json").exists():
        state = load_checkpoint(ckpt, model, opt, ema)
        torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
        if rank == 0:
            print(f"resumed {name} at epoch {state['epoch']} batch {state['batch']} step {state['step']}")
    if rank == 0:
        print(f"{name}: {models.parameter_count(model):,} parameters, {len(train)} utterances "
              f"({train.hours():.1f} h) x {args.epochs} epochs, {total} steps, device {device}, world {world}")

    def progress(st: dict) -> float:
        """Fraction of the run done: by steps, or by time when --max-minutes binds first (then the run is
        no longer bit-for-bit reproducible, since it depends on the machine's speed)."""
        by_time = st["seconds"] / (args.max_minutes * 60) if args.max_minutes else 0.0
        return max(st["step"] / max(1, total), by_time)

    def measure(epoch: float, loss) -> None:
        """A point of the learning curve (greedy CER on held-out speakers), then a checkpoint."""
        t0 = time.time()
        point = {"epoch": round(epoch, 3), "step": state["step"], "audio_hours": round(state["audio_hours"], 2),
                 "minutes": round(state["seconds"] / 60, 1), "loss": round(loss.item(), 4)}
        for n, fs in evals.items():
            point[f"cer_{n}"] = round(greedy_cer(written, fs, device, args.eval_limit), 4)
            if ema is not None:  # the last step's own weights, beside their average
                point[f"cer_{n}_raw"] = round(greedy_cer(model, fs, device, args.eval_limit), 4)
        state["curve"].append(point)
        print(json.dumps(point), flush=True)
        save_checkpoint(ckpt, model, opt, {**state, "torch_rng": torch.get_rng_state().tolist()}, ema)
        run["measuring"] += time.time() - t0

    t_start, t_ckpt = time.time() - state["seconds"], time.time()
    run = {"start": time.time(), "hours": state["audio_hours"], "measuring": 0.0}  # this process only

    def run_speed() -> float:
        """Hours of audio trained on per wall-clock minute in this process, measuring time excluded."""
        minutes = (time.time() - run["start"] - run["measuring"]) / 60
        return (state["audio_hours"] - run["hours"]) / max(1e-9, minutes)
    stop = False
    net.train()
    while state["epoch"] < args.epochs and not stop:
        epoch = state["epoch"]
        batches = make_batches(lengths, args.batch_frames, epoch_order(epoch, args.seed, not args.no_sortagrad))
        batches = batches[: steps_per_epoch * world][rank::world]
        bar = tqdm(total=len(batches), initial=state["batch"], desc=f"{name} epoch {epoch + 1}/{args.epochs}",
                   disable=rank != 0, mininterval=10, dynamic_ncols=True)
        trained = state["batch"] < len(batches)  # not when a run that stopped on this epoch's last batch resumes
        for bi in range(state["batch"], len(batches)):
            soft = None
            if args.audio:
                x, xl, y, yl = batcher(batches[bi], masked=online is None)
                if online is not None:
                    with torch.no_grad():
                        soft = delayed(online(x, xl).log_softmax(-1), args.teacher_delay)
                    x = batcher.mask(x)
            else:
                x, xl, y, yl = collate([train.items[i] for i in batches[bi]], spec)
                if targets is not None:
                    soft = torch.nn.utils.rnn.pad_sequence([targets[i] for i in batches[bi]], batch_first=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(state["step"], progress(state), args.lr, args.warmup)
            # on a GPU padding is kept out of the recurrence (packed sequences); on a CPU that costs 14x, and
            # batches of similar length keep the padding short
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                logits = net(x.to(device), xl if device.type == "cuda" else None)
            log_probs = logits.float().log_softmax(-1).transpose(0, 1)
            loss = F.ctc_loss(log_probs, y.to(device), xl, yl, blank=BLANK, zero_infinity=True)
            if soft is not None:
                loss = loss + args.distill * distill_loss(log_probs.transpose(0, 1), soft.float().to(device), xl,
                                                           args.distill_focus)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            state["step"] += 1
            state["batch"] = bi + 1
            state["audio_hours"] += float(xl.sum()) * world / 100 / 3600
            state["seconds"] = time.time() - t_start
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}",
                            speed=f"{run_speed():.2f} h audio/min", refresh=False)
            bar.update(1)
            if rank == 0 and time.time() - t_ckpt > args.checkpoint_minutes * 60:
                measure(epoch + state["batch"] / len(batches), loss)
                t_ckpt = time.time()
            if (args.max_minutes and state["seconds"] > args.max_minutes * 60) or \
                    (args.max_steps and state["step"] >= args.max_steps):
                stop = True
                break
        bar.close()
        if not stop:
            state["epoch"] += 1
            state["batch"] = 0
        if rank == 0 and trained:  # (that run measured where it stopped)
            measure(state["epoch"] + (state["batch"] / max(1, len(batches)) if stop else 0), loss)
    if rank == 0:
        card = {
            "name": name,
            "arch": arch,
            "parameters": models.parameter_count(model),
            "causal": not arch.get("bidirectional", False),
            "training": {
                "data": ({"audio pack": f"{args.audio.name}: decoded Opus clips, augmented afresh per batch on the "
                                        "device (asr_core.onthefly)", "corpora": onthefly.corpus_hours(args.audio),
                          **({"vtlp": f"alpha ~ U{args.vtlp} per fresh copy"} if args.vtlp else {})}
                         if args.audio else {n: "cached MFCCs, see asr_core.data" for n in args.train}),
                "init_from": args.init_from,
                "teacher": ({"model": args.teacher[0] if len(args.teacher) == 1 else args.teacher,
                             **({"ensemble": "per frame, the mean of the teachers' log-probabilities, renormalized"}
                                if len(args.teacher) > 1 else {}),
                             "distill_weight": args.distill, "delay_frames": args.teacher_delay,
                             "focus": args.distill_focus,
                             "targets": ("online: the teacher hears each augmented batch before SpecAugment" if online is not None
                                         else "once per cached utterance, before SpecAugment"),
                             "loss": "CTC + weight x mean per-frame KL(teacher(t - delay) || student(t))"
                                     + (", frames weighted by the teacher's 1 - P(blank)" if args.distill_focus else "")}
                            if args.teacher else None),
                "utterances": len(train), "hours_per_epoch": round(train.hours(), 2),
                "epochs_done": round(state["curve"][-1]["epoch"], 2) if state["curve"] else 0,
                "steps": state["step"], "audio_hours_seen": round(state["audio_hours"], 1),
                "minutes": round(state["seconds"] / 60, 1),
                **({"ema": {"decay": args.ema, "steps_averaged": int(ema.n_averaged),
                            "weights": "exponential moving average of the weights after every step "
                                       "(torch.optim.swa_utils); the last step's own weights: NAME-raw"}}
                   if ema is not None else {}),
                "speed_audio_hours_per_minute": round(state["audio_hours"] / max(1e-9, state["seconds"] / 60), 2),
                "speed_last_run_audio_hours_per_minute": round(run_speed(), 2),
                "hardware": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                            f"{torch.get_num_threads()} threads, device {device}, world {world}",
                "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                "command": "python -m asr_core.train " + shlex.join(sys.argv[1:] if argv is None else argv),
            },
            "curve": state["curve"],
            "curve_note": "greedy CER on a spread-out subset of each held-out set after each epoch"
                          + (" (the averaged weights; *_raw: the last step's own)" if ema is not None else ""),
        }
        models.save(written, card, name, args.out_dir)
        print(f"wrote {args.out_dir / name}.safetensors and .json")
        if ema is not None:
            raw = copy.deepcopy(card)
            raw["name"] = f"{name}-raw"
            raw["training"]["ema"] = {"decay": args.ema, "weights": f"the last step's own weights; {name}: their average"}
            models.save(model, raw, f"{name}-raw", args.out_dir)
            print(f"wrote {args.out_dir / name}-raw.safetensors and .json (the last step's own weights)")
    if distributed:  # leave together: a rank that tore gloo down while rank 0 still wrote the card aborted at exit
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
