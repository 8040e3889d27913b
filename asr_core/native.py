"""The time loops of the GRU and LSTM in C (recurrent_bf16.c): built on first use with the system C compiler,
loaded with ctypes.

Why: a recurrent layer cannot batch its time steps, so each 10 ms frame costs one W_hh h per layer and
direction. numpy's float32 matrix-vector product reads the 1.2 MB W_hh of a 320-unit GRU layer from L3 every
step (about 18 us on this project's CPU); the kernel keeps W_hh as bfloat16 pairs in L2 and multiplies with
AVX-512 BF16 instructions, the gates in the same loop (about 7.5 us per step; 6 us per LSTM direction of 256). The input side of all frames
is one bf16 matrix product (PyTorch), handed over as bf16 with the biases added inside the loop.

It is used only where it can be: an x86-64 Linux CPU that lists `avx512_bf16`, a C compiler (`cc`, or
$CC), and a build that passes a self-check against numpy. Otherwise `kernel()` returns None, `status()`
says why, and the models run their other paths (models.fast). The compiled library is cached (per source and flags) in
$ASR_LAB_CACHE (default ~/.cache/asr-lab). Only this package's own C source is ever compiled; the compiler
runs without a shell and with fixed arguments.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

SOURCE = Path(__file__).with_name("recurrent_bf16.c")
FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-march=x86-64-v4", "-mavx512bf16", "-fPIC", "-shared"]
_reason = "not tried yet"


def cpu_has_bf16() -> bool:
    """Does this CPU execute AVX-512 BF16 (vdpbf16ps)? Read from Linux's /proc/cpuinfo flags; False elsewhere."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags


def cache_dir() -> Path:
    base = os.environ.get("ASR_LAB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "asr-lab"
    return Path(base)


def _build(cc: str) -> Path:
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]  # same source, same flags
    target = cache_dir() / f"recurrent_bf16-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run([cc, *FLAGS, str(SOURCE), "-o", tmp, "-lm"], check=True, capture_output=True, timeout=120)
            os.replace(tmp, target)  # atomic: two processes building at once both end with a whole file
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for stale in target.parent.glob(f"{SOURCE.stem}-*.so"):  # builds of earlier versions of the source
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


class Kernels(NamedTuple):
    gru: ctypes._CFuncPtr
    lstm: ctypes._CFuncPtr


def _bind(path: Path) -> Kernels:
    lib = ctypes.CDLL(str(path))
    ptr, i = ctypes.c_void_p, ctypes.c_int
    lib.gru_layer.argtypes = [i, i, ptr, i, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.lstm_layer.argtypes = [i, i, i, ptr, i, ptr, ptr, ptr, i, ptr, ptr, ptr, ptr]
    lib.gru_layer.restype = lib.lstm_layer.restype = None
    return Kernels(lib.gru_layer, lib.lstm_layer)


def kernel():
    """The compiled kernels (`.gru`, `.lstm`), or None (then `status()` says why). Built once per machine."""
    global _reason
    if os.environ.get("ASR_LAB_FP32") == "1":
        _reason = "off: ASR_LAB_FP32=1"
        return None
    return _compiled()


@functools.lru_cache(maxsize=1)
def _compiled():
    global _reason
    if not cpu_has_bf16():
        _reason = "not used: this CPU has no AVX-512 BF16"
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        _reason = "not used: no C compiler (cc) found"
        return None
    try:
        fns = _bind(_build(cc))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        _reason = f"not used: building recurrent_bf16.c failed ({type(e).__name__}: {detail.decode(errors='replace')[-200:] or e})"
        return None
    err = _self_check(fns)
    if err > 0.02:
        _reason = f"not used: self-check against numpy failed (max difference {err:.3g})"
        return None
    _reason = f"built with {Path(cc).name}, self-check max difference {err:.1e}"
    return fns


def status() -> str:
    kernel()
    return _reason


def pack(w_hh: np.ndarray) -> np.ndarray:
    """(G*H, H) float weights -> the kernels' layout (see recurrent_bf16.c): (G*H/16, H/2, 16) uint32 bf16 pairs."""
    rows, cols = w_hh.shape
    bits = torch.from_numpy(np.ascontiguousarray(w_hh, np.float32)).to(torch.bfloat16).view(torch.int16).numpy()
    pairs = bits.view(np.uint16).reshape(rows, cols // 2, 2).view(np.uint32).reshape(rows, cols // 2)
    return np.ascontiguousarray(pairs.reshape(rows // 16, 16, cols // 2).transpose(0, 2, 1))


def supports(hidden_size: int) -> bool:
    return hidden_size % 32 == 0 and hidden_size <= 4096


def _ptr(a, dtype) -> int:
    """Address of a C-contiguous numpy array or CPU tensor of the given dtype (checked: the C side trusts it)."""
    if isinstance(a, torch.Tensor):
        assert a.dtype == dtype and a.is_contiguous() and a.device.type == "cpu"
        return a.data_ptr()
    assert a.dtype == dtype and a.flags.c_contiguous
    return a.ctypes.data


def gru_layer(fns: Kernels, gi: torch.Tensor, bias: np.ndarray, packed: np.ndarray, b_hn: np.ndarray,
              h0: np.ndarray) -> np.ndarray:
    """(T, 3H) bf16 input side W_i* x -> (T, H) hidden states from state h0 (H,). bias (3H,): b_i* with b_hr and
    b_hz added; b_hn (H,) stays inside r * (W_hn h + b_hn)."""
    T, H = gi.shape[0], h0.shape[0]
    gi = gi.contiguous()
    bias, b_hn, h0 = (np.ascontiguousarray(a, np.float32) for a in (bias, b_hn, h0))
    assert gi.shape == (T, 3 * H) and bias.shape == (3 * H,) and packed.size * 2 == 3 * H * H and supports(H)
    out = np.empty((T, H), np.float32)
    if T:
        gh, hp = np.empty(4 * H, np.float32), np.empty(H // 2, np.uint32)
        fns.gru(T, H, _ptr(gi, torch.bfloat16), 3 * H, _ptr(bias, np.float32), _ptr(packed, np.uint32),
                _ptr(b_hn, np.float32), _ptr(h0, np.float32), _ptr(out, np.float32), _ptr(gh, np.float32),
                _ptr(hp, np.uint32))
    return out


def lstm_layer(fns: Kernels, gi: torch.Tensor, bias: np.ndarray, packed: list[np.ndarray], H: int) -> np.ndarray:
    """(T, D*4H) bf16 input side W_i* x of D = len(packed) directions (forward, then backward) -> (T, D*H) hidden
    states from a zero state, the directions side by side as in nn.LSTM's output. bias (D*4H,): b_i* + b_h*."""
    T, D = gi.shape[0], len(packed)
    gi, bias = gi.contiguous(), np.ascontiguousarray(bias, np.float32)
    assert gi.shape == (T, D * 4 * H) and bias.shape == (D * 4 * H,) and supports(H)
    assert all(p.size * 2 == 4 * H * H for p in packed)
    out = np.empty((T, D * H), np.float32)
    gh, hp, c, h = np.empty(4 * H, np.float32), np.empty(H // 2, np.uint32), np.empty(H, np.float32), np.empty(H, np.float32)
    for d, p in enumerate(packed):
        if T:
            fns.lstm(T, H, d, _ptr(gi, torch.bfloat16) + 2 * d * 4 * H, D * 4 * H, _ptr(bias, np.float32) + 4 * d * 4 * H,
                     _ptr(p, np.uint32), _ptr(out, np.float32) + 4 * d * H, D * H, _ptr(gh, np.float32),
                     _ptr(hp, np.uint32), _ptr(c, np.float32), _ptr(h, np.float32))
    return out


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def reference_gru_layer(x: np.ndarray, w_hh: np.ndarray, b_hn: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The GRU layer in plain float32 numpy, step by step, from x (T, 3H) = W_i* x + b_i* with b_hr, b_hz added
    (what the kernel must match up to bf16 rounding)."""
    H = h0.shape[0]
    h, out = h0.astype(np.float32), np.empty((len(x), H), np.float32)
    for t, g in enumerate(x):
        gh = w_hh @ h
        r, z = _sigmoid(g[:H] + gh[:H]), _sigmoid(g[H:2 * H] + gh[H:2 * H])
        n = np.tanh(g[2 * H:] + r * (gh[2 * H:] + b_hn))
        h = out[t] = n + z * (h - n)
    return out


def reference_lstm_layer(x: np.ndarray, w_hh: np.ndarray, reverse: bool = False) -> np.ndarray:
    """One direction of an LSTM layer in plain float32 numpy from a zero state; x (T, 4H) with all biases."""
    H = w_hh.shape[1]
    h, c, out = np.zeros(H, np.float32), np.zeros(H, np.float32), np.empty((len(x), H), np.float32)
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        a = x[t] + w_hh @ h
        i, f, u, o = _sigmoid(a[:H]), _sigmoid(a[H:2 * H]), np.tanh(a[2 * H:3 * H]), _sigmoid(a[3 * H:])
        c = f * c + i * u
        h = out[t] = o * np.tanh(c)
    return out


def _self_check(fns: Kernels) -> float:
    """Largest difference from the numpy layers on a small random case (guards against a bad build)."""
    rng = np.random.default_rng(0)
    H, T = 64, 5
    w3, w4 = ((rng.normal(size=(g * H, H)) / np.sqrt(H)).astype(np.float32) for g in (3, 4))
    g3, g8 = (torch.from_numpy(rng.normal(size=(T, n * H)).astype(np.float32)).to(torch.bfloat16) for n in (3, 8))
    b3, b8 = rng.normal(size=3 * H).astype(np.float32), rng.normal(size=8 * H).astype(np.float32)
    b_hn, h0 = rng.normal(size=H).astype(np.float32), np.tanh(rng.normal(size=H)).astype(np.float32)
    x3, x8 = g3.float().numpy() + b3, g8.float().numpy() + b8
    gru = np.abs(gru_layer(fns, g3, b3, pack(w3), b_hn, h0) - reference_gru_layer(x3, w3, b_hn, h0)).max()
    lstm = lstm_layer(fns, g8, b8, [pack(w4), pack(w4)], H)
    want = np.concatenate([reference_lstm_layer(x8[:, :4 * H], w4), reference_lstm_layer(x8[:, 4 * H:], w4, True)], 1)
    return float(max(gru, np.abs(lstm - want).max()))
