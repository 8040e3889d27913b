"""The GRU's time loop in C (gru_bf16.c): built on first use with the system C compiler, loaded with ctypes.

Why: a recurrent layer cannot batch its time steps, so each 10 ms frame costs one W_hh h per layer and
direction. numpy's float32 matrix-vector product reads the 1.2 MB W_hh of a 320-unit GRU layer from L3 every
step (about 18 us on this project's CPU); the kernel keeps W_hh as bfloat16 pairs in L2 and multiplies with
AVX-512 BF16 instructions, the gates in the same loop (about 6.5 us per step).

It is used only where it can be: an x86-64 Linux CPU that lists `avx512_bf16`, a C compiler (`cc`, or
$CC), and a build that passes a self-check against numpy. Otherwise `kernel()` returns None, `status()`
says why, and the GRU runs models.gru in float32. The compiled library is cached (per source and flags) in
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

import numpy as np
import torch

SOURCE = Path(__file__).with_name("gru_bf16.c")
FLAGS = ["-O3", "-ffast-math", "-fopenmp-simd", "-march=x86-64-v4", "-mavx512bf16", "-fPIC", "-shared"]
_reason = "not tried yet"


def cpu_has_bf16() -> bool:
    """Does this CPU execute AVX-512 BF16 (vdpbf16ps)? Read from the kernel's CPU flags; False off Linux x86-64."""
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
    target = cache_dir() / f"gru_bf16-{key}.so"
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
    return target


def _bind(path: Path):
    fn = ctypes.CDLL(str(path)).gru_layer
    ptr, i = ctypes.c_void_p, ctypes.c_int
    fn.argtypes = [i, i, ptr, ptr, ptr, ptr, ptr, ptr, ptr]
    fn.restype = None
    return fn


def kernel():
    """The compiled `gru_layer` function, or None (then `status()` says why). Built once per machine."""
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
        fn = _bind(_build(cc))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", b"") or b""
        _reason = f"not used: building gru_bf16.c failed ({type(e).__name__}: {detail.decode(errors='replace')[-200:] or e})"
        return None
    err = _self_check(fn)
    if err > 0.02:
        _reason = f"not used: self-check against numpy failed (max difference {err:.3g})"
        return None
    _reason = f"built with {Path(cc).name}, self-check max difference {err:.1e}"
    return fn


def status() -> str:
    kernel()
    return _reason


def pack(w_hh: np.ndarray) -> np.ndarray:
    """(3H, H) float weights -> the kernel's layout (see gru_bf16.c): (3H/16, H/2, 16) uint32 bf16 pairs."""
    rows, cols = w_hh.shape
    bits = torch.from_numpy(np.ascontiguousarray(w_hh, np.float32)).to(torch.bfloat16).view(torch.int16).numpy()
    pairs = bits.view(np.uint16).reshape(rows, cols // 2, 2).view(np.uint32).reshape(rows, cols // 2)
    return np.ascontiguousarray(pairs.reshape(rows // 16, 16, cols // 2).transpose(0, 2, 1))


def supports(hidden_size: int) -> bool:
    return hidden_size % 32 == 0 and hidden_size <= 4096


def _f32(a: np.ndarray) -> int:
    assert a.dtype == np.float32 and a.flags.c_contiguous
    return a.ctypes.data


def gru_layer(fn, gi: np.ndarray, packed: np.ndarray, b_hn: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """(T, 3H) input projections (b_hr, b_hz included) -> (T, H) hidden states, from state h0 (H,)."""
    T, H = gi.shape[0], h0.shape[0]
    gi, b_hn, h0 = (np.ascontiguousarray(a, np.float32) for a in (gi, b_hn, h0))
    assert gi.shape == (T, 3 * H) and packed.dtype == np.uint32 and packed.size * 2 == 3 * H * H and supports(H)
    out = np.empty((T, H), np.float32)
    if T:
        gh, hp = np.empty(3 * H, np.float32), np.empty(H // 2, np.uint32)
        fn(T, H, _f32(gi), packed.ctypes.data, _f32(b_hn), _f32(h0), _f32(out), _f32(gh), hp.ctypes.data)
    return out


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def reference_gru_layer(gi: np.ndarray, w_hh: np.ndarray, b_hn: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The GRU layer in plain float32 numpy, step by step (what the kernel must match up to bf16 rounding)."""
    H = h0.shape[0]
    h, out = h0.astype(np.float32), np.empty((len(gi), H), np.float32)
    for t, g in enumerate(gi):
        gh = w_hh @ h
        r, z = _sigmoid(g[:H] + gh[:H]), _sigmoid(g[H:2 * H] + gh[H:2 * H])
        n = np.tanh(g[2 * H:] + r * (gh[2 * H:] + b_hn))
        h = out[t] = n + z * (h - n)
    return out


def _self_check(fn) -> float:
    """Largest difference from the numpy layer on a small random case (guards against a bad build)."""
    rng = np.random.default_rng(0)
    H, T = 64, 5
    gi = rng.normal(size=(T, 3 * H)).astype(np.float32)
    w = (rng.normal(size=(3 * H, H)) / np.sqrt(H)).astype(np.float32)
    b, h0 = rng.normal(size=H).astype(np.float32), np.tanh(rng.normal(size=H)).astype(np.float32)
    return float(np.abs(gru_layer(fn, gi, pack(w), b, h0) - reference_gru_layer(gi, w, b, h0)).max())
