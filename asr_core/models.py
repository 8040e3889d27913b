"""Stage 3 — acoustic models: one 29-way distribution per MFCC frame (T frames in, T outputs out).

`SimpleASR_RNN` is the textbook model, exactly: h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h) from a zero
state, then o_t = softmax(W_ho h_t + b_o) at every step. `RecurrentASR` is the same idea with LSTM or
GRU cells, optionally stacked and bidirectional. Weights live in assets/models as safetensors + JSON.
"""
from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import native
from .vocab import NUM_CLASSES

MODELS_DIR = Path(__file__).resolve().parents[1] / "assets" / "models"


class SimpleASR_RNN(nn.Module):
    """The reference model of the lesson: one tanh RNN layer and a linear read-out at every step."""

    def __init__(self, input_size: int = 40, hidden_size: int = 256, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.hidden_size = hidden_size
        self.rnn = nn.RNN(input_size, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h0 = torch.zeros(1, x.shape[0], self.hidden_size, dtype=x.dtype, device=x.device)
        out = _run(self.rnn, x, lengths, h0)
        return self.fc(out)  # (B, T, num_classes) logits; softmax over the last axis gives o_t


class RecurrentASR(nn.Module):
    """LSTM or GRU acoustic model: stacked (and optionally bidirectional) cells, a linear read-out per frame."""

    def __init__(self, cell: str = "lstm", input_size: int = 40, hidden_size: int = 256, num_layers: int = 3,
                 bidirectional: bool = True, dropout: float = 0.1, num_classes: int = NUM_CLASSES):
        super().__init__()
        rnn_cls = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = rnn_cls(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                           bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is None and isinstance(self.rnn, nn.GRU):
            return self.fc(gru(self.rnn, x)[0])
        return self.fc(_run(self.rnn, x, lengths, None))


def _run(rnn: nn.Module, x: torch.Tensor, lengths, h0):
    """Run a recurrent layer over a padded batch; with lengths, padding never enters the recurrence."""
    if lengths is None:
        return rnn(x, h0)[0]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed, h0)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]


def gru(rnn: nn.GRU, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`rnn(x, hx)` for a batch_first nn.GRU, computed faster when it runs one clip for inference.

    nn.GRU on the CPU spends most of each time step in MKL's matrix-vector product W_hh h (about
    twice as slow as OpenBLAS's on this project's AMD CPUs) and the rest in some twenty small ATen
    calls; there is no oneDNN GRU kernel in PyTorch (its fused CPU RNN is LSTM-only). Here the input
    projections of all frames are one matrix product, and each step is one BLAS matrix-vector
    product (numpy's OpenBLAS) plus a few in-place numpy operations, with PyTorch's gate order and
    equations:

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)     z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h = n + z * (h - n)

    The results equal nn.GRU's to float32 rounding (tests/test_fast_gru.py). Anything else
    (training, gradients, a batch of several clips, bidirectional, no biases) runs nn.GRU itself.
    """
    fast = (not rnn.training and not torch.is_grad_enabled() and rnn.batch_first and not rnn.bidirectional
            and rnn.bias and x.dim() == 3 and x.shape[0] == 1 and x.dtype == torch.float32 and x.device.type == "cpu")
    if not fast:
        return rnn(x, hx)
    H = rnn.hidden_size
    layer_in, finals = x[0], []
    for layer in range(rnn.num_layers):
        w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{w}_l{layer}").detach()
                                  for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        gi = torch.addmm(b_ih, layer_in, w_ih.t()).numpy()  # (T, 3H): W_i* x + b_i* for every frame at once
        gi[:, :2 * H] += b_hh[:2 * H].numpy()                 # b_hr, b_hz join them; b_hn stays inside r * (...)
        gi_rz, gi_n = gi[:, :2 * H], gi[:, 2 * H:]
        w, b_hn = w_hh.numpy(), b_hh[2 * H:].numpy()
        out = np.empty((len(gi), H), np.float32)
        h = np.zeros(H, np.float32) if hx is None else hx[layer, 0].detach().numpy().copy()
        gh = np.empty(3 * H, np.float32)
        rz, n = gh[:2 * H], gh[2 * H:]              # views: the step works in place in gh
        r, z = rz[:H], rz[H:]
        rz_t = torch.from_numpy(rz)                 # the same memory, for torch's sigmoid
        for t in range(len(gi)):
            np.dot(w, h, out=gh)                    # W_hr h, W_hz h, W_hn h: the one costly operation
            rz += gi_rz[t]
            rz_t.sigmoid_()
            n += b_hn
            n *= r
            n += gi_n[t]
            np.tanh(n, out=n)
            h_new = out[t]                          # h' = n + z * (h - n), written into the output row
            np.subtract(h, n, out=h_new)
            h_new *= z
            h_new += n
            h = h_new
        finals.append(h)
        layer_in = torch.from_numpy(out)
    return layer_in[None], torch.from_numpy(np.stack(finals))[:, None]


def recurrent(rnn: nn.Module, x: torch.Tensor, hx=None):
    """`rnn(x, hx)`, through the faster `gru` when the layer is a GRU (for callers that carry the state)."""
    return gru(rnn, x, hx) if isinstance(rnn, nn.GRU) else rnn(x, hx)


def build(config: dict) -> nn.Module:
    """A model from its JSON config's "arch" block."""
    arch = dict(config["arch"])
    kind = arch.pop("type")
    if kind == "rnn":
        return SimpleASR_RNN(**arch)
    return RecurrentASR(cell=kind, **arch)


def deepened(state: dict, arch: dict, gain: float = 0.25, gate_bias: float = 4.0) -> dict:
    """Weights for the deeper LSTM `arch` from a shallower one's `state`, computing (almost) the same function
    (Net2DeeperNet, Chen et al. 2016): the old layers are copied, each new top layer starts as a near-identity
    per direction (input gate and output gate open, forget gate shut, no recurrence, candidate g = tanh(gain * x)
    of its own direction's input), and the read-out is scaled back by the layer's small-signal gain.
    Training then uses the extra layer's capacity from where the shallow model stood, not from scratch."""
    if arch["type"] != "lstm":
        raise ValueError("deepened grows LSTMs only")
    old_layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in state if k.startswith("rnn.weight_ih_l"))
    H, dirs = arch["hidden_size"], (["", "_reverse"] if arch["bidirectional"] else [""])
    new = dict(state)
    for layer in range(old_layers, arch["num_layers"]):
        for d, sfx in enumerate(dirs):
            w_ih = torch.zeros(4 * H, H * len(dirs))
            w_ih[2 * H:3 * H, d * H:(d + 1) * H] = gain * torch.eye(H)   # g: this direction's own input
            b_ih = torch.zeros(4 * H)
            b_ih[:H], b_ih[H:2 * H], b_ih[3 * H:] = gate_bias, -gate_bias, gate_bias   # i open, f shut, o open
            new.update({f"rnn.weight_ih_l{layer}{sfx}": w_ih, f"rnn.weight_hh_l{layer}{sfx}": torch.zeros(4 * H, H),
                        f"rnn.bias_ih_l{layer}{sfx}": b_ih, f"rnn.bias_hh_l{layer}{sfx}": torch.zeros(4 * H)})
        new["fc.weight"] = new["fc.weight"] / (gain * torch.sigmoid(torch.tensor(gate_bias)) ** 2)
    return new


def ensemble(log_probs: list[torch.Tensor]) -> torch.Tensor:
    """Several models' (T, 29) log-probabilities of one utterance as one model's: per frame, the mean of the
    log-probabilities, renormalized (the trainer's teachers and asr_core.compare's "a+b" both mean this)."""
    return torch.stack([lp.float() for lp in log_probs]).mean(0).log_softmax(-1)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def save(model: nn.Module, config: dict, name: str, directory: Path = MODELS_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, directory / f"{name}.safetensors")
    (directory / f"{name}.json").write_text(json.dumps(config, indent=2) + "\n")


def available(directory: Path = MODELS_DIR) -> list[str]:
    """Names of the shipped models, best (lowest recorded CER) first."""
    names = [p.stem for p in directory.glob("*.json") if (directory / f"{p.stem}.safetensors").exists()]
    return sorted(names, key=lambda n: (card(n, directory).get("headline", {}).get("cer", 9.0), n))


def card(name: str, directory: Path = MODELS_DIR) -> dict:
    """The model's JSON card: architecture, training data and time, measured metrics."""
    return json.loads((directory / f"{name}.json").read_text())


@functools.lru_cache(maxsize=8)
def load(name: str, directory: Path = MODELS_DIR) -> nn.Module:
    """Load a shipped model (safetensors only: nothing is unpickled), in eval mode, cached per process."""
    if not (directory / f"{name}.json").exists():
        raise KeyError(f"unknown model {name!r}; shipped: {', '.join(available(directory))}")
    with torch.inference_mode(False):  # normal tensors even when first loaded inside inference code: the shared
        model = build(card(name, directory))  # model must still work with autograd (introspect's gradients)
        model.load_state_dict(load_file(directory / f"{name}.safetensors"))
    return model.eval()


def bf16_native() -> bool:
    """Does this CPU multiply bfloat16 in hardware (AVX-512 BF16 or AMX)? Only there is bf16 faster than
    float32; elsewhere PyTorch emulates it, slowly. ASR_LAB_FP32=1 turns the bf16 path off."""
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return native and os.environ.get("ASR_LAB_FP32") != "1"


class BF16Copy(nn.Module):
    """A model with bfloat16 weights behind float32 inputs and outputs (one clip at a time, inference only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model.to(torch.bfloat16).eval()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x.to(torch.bfloat16), lengths).float()


class KernelCopy(nn.Module):
    """A recurrent model whose time loops run in native's C kernels (bfloat16 W_hh; float32 state, gates and
    read-out); the input side of all frames is one bf16 matrix product. Anything but one float32 clip at
    inference (a batch, lengths, gradients) runs the float32 model itself, which it shares."""

    def __init__(self, model: nn.Module, kernels: native.Kernels):
        super().__init__()
        self.model, self.kernels, self.layers = model, kernels, []

    @staticmethod
    def _usable(x: torch.Tensor) -> bool:
        return x.dim() == 3 and x.shape[0] == 1 and x.dtype == torch.float32 and not torch.is_grad_enabled()

    @staticmethod
    def _weights(rnn: nn.Module, layer: int, suffix: str = ""):
        return tuple(getattr(rnn, f"{w}_l{layer}{suffix}").detach().float()
                     for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        if lengths is not None or not self._usable(x):
            return self.model(x, lengths)
        return self.model.fc(self.recurrent(x)[0])


class BF16GRU(KernelCopy):
    """A causal GRU model through native.gru_layer; `recurrent` carries the state like models.recurrent."""

    def __init__(self, model: nn.Module, kernels: native.Kernels):
        super().__init__(model, kernels)
        H = model.rnn.hidden_size
        for layer in range(model.rnn.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(model.rnn, layer)
            bias = b_ih.clone()
            bias[:2 * H] += b_hh[:2 * H]                          # b_hr, b_hz join the input side; b_hn cannot
            self.layers.append((w_ih.to(torch.bfloat16), bias.numpy(), native.pack(w_hh.numpy()),
                                b_hh[2 * H:].numpy().copy()))

    def recurrent(self, x: torch.Tensor, hx: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `recurrent(model.rnn, x, hx)`: (1, T, H) outputs and the (layers, 1, H) final state to carry on."""
        if not self._usable(x):
            return recurrent(self.model.rnn, x, hx)
        layer_in, finals = x[0], []
        for layer, (w_ih, bias, packed, b_hn) in enumerate(self.layers):
            h0 = np.zeros(len(b_hn), np.float32) if hx is None else hx[layer, 0].float().numpy()
            out = native.gru_layer(self.kernels, layer_in.to(torch.bfloat16) @ w_ih.t(), bias, packed, b_hn, h0)
            finals.append(out[-1] if len(out) else h0)
            layer_in = torch.from_numpy(out)
        return layer_in[None], torch.from_numpy(np.stack(finals))[:, None]


class BF16LSTM(KernelCopy):
    """An LSTM model (uni- or bidirectional, from a zero state) through native.lstm_layer."""

    def __init__(self, model: nn.Module, kernels: native.Kernels):
        super().__init__(model, kernels)
        rnn = model.rnn
        for layer in range(rnn.num_layers):
            parts = [self._weights(rnn, layer, sfx) for sfx in (["", "_reverse"] if rnn.bidirectional else [""])]
            w_ih = torch.cat([w for w, _, _, _ in parts]).to(torch.bfloat16)   # both directions in one product
            bias = torch.cat([b_ih + b_hh for _, _, b_ih, b_hh in parts]).numpy()
            self.layers.append((w_ih, bias, [native.pack(w_hh.numpy()) for _, w_hh, _, _ in parts]))

    def recurrent(self, x: torch.Tensor, hx=None) -> tuple[torch.Tensor, None]:
        assert hx is None and self._usable(x)
        layer_in, H = x[0], self.model.rnn.hidden_size
        for w_ih, bias, packed in self.layers:
            layer_in = torch.from_numpy(native.lstm_layer(self.kernels, layer_in.to(torch.bfloat16) @ w_ih.t(), bias, packed, H))
        return layer_in[None], None


def causal_step(name: str):
    """For a causal model: step(x, hx) -> (outputs, state), run as the app runs the model (models.fast), so
    that streaming and long recordings carried chunk by chunk compute what one pass over the clip computes."""
    copy = fast(name)
    if isinstance(copy, BF16GRU):
        return copy.recurrent
    return functools.partial(recurrent, load(name).rnn)


def is_bf16_copy(model: nn.Module) -> bool:
    """Is this one of the app's bfloat16 copies (models.fast) rather than the float32 model?"""
    return isinstance(model, (BF16Copy, KernelCopy))


def fast(name: str, directory: Path = MODELS_DIR) -> nn.Module:
    """The copy of a shipped model that the app runs, on CPUs that multiply bfloat16 in hardware:
    - a causal GRU or an LSTM: BF16GRU / BF16LSTM, the time loops in C with bf16 W_hh (native.py), where the
      kernels build;
    - else an LSTM: a bf16 copy through PyTorch (oneDNN's fused LSTM kernel in bf16);
    otherwise (the RNN, other CPUs, ASR_LAB_FP32=1) `load(name)` itself.

    Speed (10 s clip, one thread) and accuracy on speechocean762 test against the float32 model: README,
    "Speed and memory". Every accuracy figure in the cards is the float32 model's (asr_core.evaluate).
    """
    model = load(name) if directory == MODELS_DIR else load(name, directory)  # load's cache is keyed by the call
    return _fast_copy(model, name, directory)


@functools.lru_cache(maxsize=8)
def _fast_copy(model: nn.Module, name: str, directory: Path) -> nn.Module:
    """fast()'s copy of the very object load() returned (keyed by it): after load() has let a model go and loaded
    it again, fast() answers with a copy of the new object, never of the old one (whose entry only waits here
    until this cache's own 8 turn over; the app's three models never get that far)."""
    rnn = getattr(model, "rnn", None)
    if not isinstance(rnn, (nn.GRU, nn.LSTM)):
        return model
    plain = rnn.bias and native.supports(rnn.hidden_size) and not getattr(rnn, "proj_size", 0)
    kernels = native.kernel() if plain else None
    if isinstance(rnn, nn.GRU):
        return BF16GRU(model, kernels) if kernels and not rnn.bidirectional else model
    if kernels:
        return BF16LSTM(model, kernels)
    if not (isinstance(rnn, nn.LSTM) and bf16_native()):
        return model
    twin = build(card(name, directory))  # a fresh copy: BF16Copy turns its model to bf16 in place
    twin.load_state_dict(load_file(directory / f"{name}.safetensors"))
    return BF16Copy(twin)


@functools.lru_cache(maxsize=4)
def int8(name: str, directory: Path = MODELS_DIR) -> nn.Module:
    """Opt-in, never used by default: a copy of a shipped model with int8 weights in its LSTM/GRU and read-out
    (PyTorch's dynamic quantization; activations are quantized on the fly, step by step).

    Its outputs are NOT the float model's: per frame the best symbol differs on ~0.3-0.9% of frames and single
    probabilities by up to ~1.0 (python -m asr_core.bench --int8). Measured on speechocean762 test (all 2000
    utterances, one clip at a time, greedy) with the weights shipped then: GRU CER 0.5132 / WER 0.8968 (float:
    0.5136 / 0.8975), LSTM 0.4300 / 0.8287 (float: 0.4296 / 0.8285; both the models shipped before their
    distillation rounds of 2026-11-28). Speed, 10 s clip, one thread: about 2x
    the float GRU's models.gru, 1.4x the float LSTM (the app's bf16 LSTM, models.fast, is faster still).
    """
    model = build(card(name, directory))
    model.load_state_dict(load_file(directory / f"{name}.safetensors"))
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model.eval(), {nn.GRU, nn.LSTM, nn.Linear}, dtype=torch.qint8)
