"""Looking inside the recurrent models: hidden states, gates, gradients and frame order, for one clip.

Everything here is computed from the shipped weights on the clip that is loaded:

- `unroll` steps the first recurrent layer through time by hand, with the textbook equations
  (RNN:  h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h);  LSTM gates i, f, g, o;  GRU gates r, z, n),
  so each gate can be shown at each step. The tests check these against torch's own layers.
- `pca_path` projects the hidden states h_1..h_T onto their two main directions.
- `input_gradients` measures how much the last step's output depends on each earlier input frame
  (the norm of d log p_T / d x_t), the quantity that vanishes in a plain RNN.
- `shuffle_experiment` permutes the MFCC frames: the same set of frames in another order.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from . import ctc, longform, models

MAX_FRAMES = int(longform.VIEW_SECONDS * 100)   # the teaching views look at most at the first 30 s of a clip
GATE_NAMES = {"rnn": [], "lstm": ["i", "f", "g", "o"], "gru": ["r", "z", "n"]}


@dataclass
class Unrolled:
    """Every intermediate value of one model on one clip (frames 0..T-1, row t is step t)."""
    model_name: str
    cell: str                     # "rnn" | "lstm" | "gru"
    x: np.ndarray                 # (T, 40) the MFCC frames fed in
    h: np.ndarray                 # (T, H) layer-0 (forward) hidden state after step t
    c: np.ndarray | None          # (T, H) LSTM cell state after step t
    gates: dict[str, np.ndarray]  # gate name -> (T, H) activation at step t
    recurrent_norm: np.ndarray    # (T,) || W_hh h_{t-1} (+ b_hh) ||, the memory term
    input_norm: np.ndarray        # (T,) || W_xh x_t (+ b_ih) ||, the new-input term
    readout: np.ndarray           # (T, D) the states the softmax layer reads (top layer, both directions)
    log_probs: np.ndarray         # (T, 29) the model's output at each step
    layers: int = 1
    bidirectional: bool = False

    @property
    def frames(self) -> int:
        return self.x.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.h.shape[1]

    def h_prev(self, t: int) -> np.ndarray:
        """h_{t-1}; the state before the first step is zero."""
        return self.h[t - 1] if t > 0 else np.zeros(self.hidden_size, dtype=self.h.dtype)


def cell_type(rnn: nn.Module) -> str:
    return {nn.RNN: "rnn", nn.LSTM: "lstm", nn.GRU: "gru"}[type(rnn)]


def layer0_weights(rnn: nn.Module) -> dict[str, torch.Tensor]:
    """The first layer's forward-direction weights: W_ih (G*H, in), W_hh (G*H, H), b_ih, b_hh."""
    zeros = torch.zeros(rnn.weight_ih_l0.shape[0])
    return {"w_ih": rnn.weight_ih_l0.detach(), "w_hh": rnn.weight_hh_l0.detach(),
            "b_ih": rnn.bias_ih_l0.detach() if rnn.bias else zeros,
            "b_hh": rnn.bias_hh_l0.detach() if rnn.bias else zeros}


@torch.no_grad()
def step_layer0(rnn: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Run layer 0 (forward direction) over x (T, in) one step at a time, keeping every gate.

    torch packs the gates row-wise in its weight matrices: LSTM [i, f, g, o], GRU [r, z, n].
    """
    cell = cell_type(rnn)
    w = layer0_weights(rnn)
    hidden = w["w_hh"].shape[1]
    inputs = x @ w["w_ih"].T + w["b_ih"]            # all input terms at once: (T, G*H)
    h = torch.zeros(hidden)
    c = torch.zeros(hidden)
    hs, cs, rec_norms = [], [], []
    gates = {name: [] for name in GATE_NAMES[cell]}
    for t in range(x.shape[0]):
        rec = w["w_hh"] @ h + w["b_hh"]              # the memory term: (G*H,)
        rec_norms.append(rec.norm())
        if cell == "rnn":
            act = torch.tanh if rnn.nonlinearity == "tanh" else torch.relu
            h = act(inputs[t] + rec)
        elif cell == "lstm":
            i, f, g, o = (inputs[t] + rec).chunk(4)
            i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
            c = f * c + i * g
            h = o * c.tanh()
            for name, value in zip("ifgo", (i, f, g, o)):
                gates[name].append(value)
            cs.append(c)
        else:  # gru: n = tanh(W_in x + b_in + r * (W_hn h + b_hn)), h' = (1 - z) n + z h
            x_r, x_z, x_n = inputs[t].chunk(3)
            h_r, h_z, h_n = rec.chunk(3)
            r = (x_r + h_r).sigmoid()
            z = (x_z + h_z).sigmoid()
            n = (x_n + r * h_n).tanh()
            h = (1 - z) * n + z * h
            for name, value in zip("rzn", (r, z, n)):
                gates[name].append(value)
        hs.append(h)
    out = {"h": torch.stack(hs), "recurrent_norm": torch.stack(rec_norms), "input_norm": inputs.norm(dim=1)}
    if cs:
        out["c"] = torch.stack(cs)
    for name, values in gates.items():
        out[name] = torch.stack(values)
    return out


def _key(model_name: str, feats) -> tuple[str, str]:
    arr = np.ascontiguousarray(np.asarray(feats, dtype=np.float32))
    return model_name, hashlib.sha1(arr.tobytes()).hexdigest() + str(arr.shape)


class _Cache(OrderedDict):
    """A tiny LRU dict: the views re-draw on every slider move, the computation runs once per (clip, model).
    Gradio calls handlers from several threads, so lookups and updates hold a lock (the computation does not)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.lock = threading.Lock()

    def get_or(self, key, compute):
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
        value = compute()
        with self.lock:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


_UNROLLED = _Cache(8)
_GRADIENTS = _Cache(16)


def clip_frames(feats) -> np.ndarray:
    """The frames the teaching views work on: the whole clip, or its first MAX_FRAMES."""
    return np.asarray(feats, dtype=np.float32)[:MAX_FRAMES]


def unroll(model_name: str, feats) -> Unrolled:
    """All states of `model_name` on these (T, 40) frames; cached per (model, frames)."""
    feats = clip_frames(feats)
    return _UNROLLED.get_or(_key(model_name, feats), lambda: _unroll(model_name, feats))


@torch.no_grad()
def _unroll(model_name: str, feats: np.ndarray) -> Unrolled:
    model = models.load(model_name)
    x = torch.from_numpy(feats)
    steps = step_layer0(model.rnn, x)
    readout = model.rnn(x[None])[0][0]
    log_probs = model.fc(readout).log_softmax(-1)
    cell = cell_type(model.rnn)
    return Unrolled(
        model_name=model_name, cell=cell, x=feats, h=steps["h"].numpy(),
        c=steps["c"].numpy() if "c" in steps else None,
        gates={name: steps[name].numpy() for name in GATE_NAMES[cell]},
        recurrent_norm=steps["recurrent_norm"].numpy(), input_norm=steps["input_norm"].numpy(),
        readout=readout.numpy(), log_probs=log_probs.numpy(),
        layers=model.rnn.num_layers, bidirectional=model.rnn.bidirectional)


@dataclass
class PCAPath:
    coords: np.ndarray      # (T, 2) h_t projected on the first two principal directions
    explained: np.ndarray   # (2,) fraction of the variance along each


def pca_path(states) -> PCAPath:
    """Project the rows of `states` (T, D) onto their two principal directions (exact SVD)."""
    s = torch.as_tensor(np.asarray(states, dtype=np.float32))
    centred = s - s.mean(dim=0, keepdim=True)
    _, sing, vt = torch.linalg.svd(centred, full_matrices=False)
    var = sing**2
    k = min(2, vt.shape[0])
    coords = centred @ vt[:k].T
    if k < 2:
        coords = torch.cat([coords, torch.zeros(coords.shape[0], 2 - k)], dim=1)
    explained = (var[:2] / var.sum().clamp_min(1e-12)).numpy()
    return PCAPath(coords.numpy(), np.pad(explained, (0, 2 - len(explained))))


def input_gradients(model_name: str, feats) -> np.ndarray:
    """|| d log p_T(k*) / d x_t || for every frame t, indexed by distance d = T-1-t (so [0] is the last frame).

    k* is the class the model finds most probable at the last step. The whole network is
    differentiated (all layers; a bidirectional model's backward half also reads x_T directly).
    Cached per (model, frames).
    """
    feats = clip_frames(feats)
    return _GRADIENTS.get_or(_key(model_name, feats), lambda: _input_gradients(model_name, feats))


@functools.lru_cache(maxsize=4)
def differentiable(model_name: str) -> nn.Module:
    """A copy of the shipped model whose weights autograd may use.

    models.load may have built the shared copy inside torch.inference_mode (pipeline.run_model does),
    and inference tensors cannot take part in a backward pass.
    """
    with torch.inference_mode(False):
        model = models.build(models.card(model_name))
        model.load_state_dict({k: v.clone() for k, v in models.load(model_name).state_dict().items()})
    return model.eval()


def _input_gradients(model_name: str, feats: np.ndarray) -> np.ndarray:
    model = differentiable(model_name)
    with torch.inference_mode(False), torch.enable_grad():
        x = torch.from_numpy(feats.copy())[None].requires_grad_(True)
        last = model(x).log_softmax(-1)[0, -1]
        (grad,) = torch.autograd.grad(last.max(), x)   # only d/dx: nothing accumulates in the shared model
    return grad[0].norm(dim=-1).numpy()[::-1].copy()


def gradient_ratio(norms: np.ndarray, distance: int) -> float:
    """How much of the gradient is left `distance` frames back, relative to the last frame."""
    distance = min(distance, len(norms) - 1)
    return float(norms[distance] / max(float(norms[0]), 1e-30))


def gradients_all(feats, names=None) -> dict[str, np.ndarray]:
    """input_gradients for each shipped model (or the named ones)."""
    return {name: input_gradients(name, feats) for name in (names or sorted(models.available()))}


def gradient_reading(grads: dict[str, np.ndarray], distance: int = 50) -> str:
    """One sentence that reads the measured numbers: how much gradient is left `distance` frames back."""
    if not grads:
        return "No model to measure."
    shortest = min(len(g) for g in grads.values())
    distance = min(distance, shortest - 1)
    if distance < 1:
        return "The clip is a single frame long: there is no distance to measure."
    ratios = {name: gradient_ratio(g, distance) for name, g in grads.items()}
    order = sorted(ratios, key=ratios.get)
    parts = ", ".join(f"{ratios[n]:.1e} for the {n.upper()}" for n in order)
    weakest, strongest = order[0], order[-1]
    gap = ratios[strongest] / max(ratios[weakest], 1e-30)
    times = f"{gap:,.0f}" if gap < 1e6 else f"{gap:.0e}"
    return (f"{distance} frames ({distance / 100:.2f} s) before the last step, the gradient reaching the input is "
            f"{parts} of its size at the last frame: the {weakest.upper()} keeps the least of that early input, "
            f"about {times} times less than the {strongest.upper()}.")


@dataclass
class Shuffled:
    perm: np.ndarray            # shuffled frame s is original frame perm[s]
    original: np.ndarray        # (T, 40) the frames in their spoken order
    feats: np.ndarray           # (T, 40) the same frames in the new order
    log_probs: np.ndarray       # model outputs on the shuffled frames
    original_log_probs: np.ndarray

    @property
    def text(self) -> str:
        return ctc.greedy(self.log_probs).text

    @property
    def original_text(self) -> str:
        return ctc.greedy(self.original_log_probs).text


def shuffle_frames(feats, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed-seed permutation of the frames: (perm, feats[perm]). The set of frames is unchanged."""
    feats = np.asarray(feats, dtype=np.float32)
    perm = np.random.default_rng(seed).permutation(len(feats))
    return perm, feats[perm]


@torch.no_grad()
def run(model_name: str, feats) -> np.ndarray:
    """(T, 40) frames -> (T, 29) log-probabilities."""
    model = models.load(model_name)
    return model(torch.as_tensor(np.asarray(feats, dtype=np.float32))[None]).log_softmax(-1)[0].numpy()


def shuffle_experiment(model_name: str, feats, seed: int = 0) -> Shuffled:
    feats = clip_frames(feats)
    perm, shuffled = shuffle_frames(feats, seed)
    return Shuffled(perm, feats, shuffled, run(model_name, shuffled), run(model_name, feats))

