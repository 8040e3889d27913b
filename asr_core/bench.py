"""How fast is each stage, and how much memory does the app need?

    python -m asr_core.bench            # table: 1, 10 and 30 s clips x every shipped model
    python -m asr_core.bench --json     # the same figures as JSON
    python -m asr_core.bench --seconds 1 --models rnn --repeat 1 --no-server   # a quick look
    python -m asr_core.bench --train-step      # seconds per training step, float32 vs bf16 (train --bf16)

Per clip and model it times: decode + resample (a 44.1 kHz 16-bit WAV, as many uploads are), MFCC,
the model, CTC decoding (greedy, and prefix beam search with the shipped LM), and the figures of the
page (asr_core.views). Each stage runs `--repeat` times and the median is kept; the model's
speed is also given as a multiple of real time (audio seconds per second of compute). Then the
cold start: the time from starting `python app.py` until it answers HTTP, and the server's peak
resident memory after it has analysed the longest clip. If the pocketsphinx package is installed,
its transcription of the same clips is timed too, for comparison.

Torch runs with one thread, as in the app (app.py: one core per request), unless --threads says
otherwise. The model stage runs what the app runs (models.fast): on a CPU with AVX-512 BF16, the GRU's
and LSTM's C kernels with bf16 weights (asr_core/native.py; where they cannot be built, models.gru and
PyTorch's bf16 LSTM); the plain float32 model (nn.GRU / nn.LSTM) is timed beside it. --int8 also times the opt-in int8 copies (models.int8), whose
outputs differ from the float model's: how often their per-frame best symbol agrees is printed.

Targets (reported, never asserted): a 10 s clip fully analysed, figures included, in <= 0.3 s;
the model at >= 200x real time; cold start <= 10 s; peak memory <= 1 GB.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from . import app_process, audio, beam, ctc, features, models, native, pipeline, views
from .examples import synthesize

REPO = Path(__file__).resolve().parents[1]
TEXT = ("speech recognition turns sound into text one frame at a time and the network has to "
        "decide which letter it hears every ten milliseconds")
UPLOAD_RATE = 44_100
TARGETS = {"analyse_10s_s": 0.3, "model_x_realtime": 200, "cold_start_s": 10, "peak_rss_mb": 1024}


def make_clip(seconds: float, folder: Path) -> Path:
    """`seconds` of synthesized speech (the sentence repeated) as a 44.1 kHz 16-bit WAV."""
    data, rate = synthesize("espeak:en-us", TEXT)
    wave = AF.resample(torch.as_tensor(data, dtype=torch.float32), rate, UPLOAD_RATE).numpy()
    n = int(seconds * UPLOAD_RATE)
    wave = np.tile(wave, n // len(wave) + 1)[:n]
    path = folder / f"bench_{seconds:g}s.wav"
    sf.write(path, 0.9 * wave / np.abs(wave).max(), UPLOAD_RATE, subtype="PCM_16")
    return path


def timed(fn, repeat: int):
    """(result of the last call, median seconds over `repeat` calls after one untimed warm-up call).

    The warm-up takes what a server does once per process (loading the LM, plotly's templates)."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, statistics.median(times)


def all_views(a) -> None:
    """Every figure the main tab draws for one analysis."""
    views.info_markdown(a)
    views.lengths_figure(a)
    views.detail_views(a)


def bench_clip(path: Path, seconds: float, model_name: str, repeat: int, beam_search: bool) -> dict:
    clip, t_decode = timed(lambda: audio.load(str(path)), repeat)
    feats, t_mfcc = timed(lambda: features.mfcc(clip.samples), repeat)
    if seconds > 30 or model_name not in models.available():
        raise ValueError("bench clips are at most 30 s (the one-pass path) and use shipped models")
    log_probs, t_model = timed(lambda: pipeline.run_model(model_name, feats), repeat)
    _, t_greedy = timed(lambda: ctc.greedy(log_probs), repeat)
    row = {"seconds": seconds, "model": model_name, "decode_s": t_decode, "mfcc_s": t_mfcc,
           "model_s": t_model, "greedy_s": t_greedy}
    baseline = slower_path(model_name)  # what the app's faster path replaced, timed beside it
    if baseline:
        fast_name, slow_name, slow = baseline
        _, slow_s = timed(lambda: slow(feats), repeat)
        row["baseline"] = {"fast": fast_name, "slow": slow_name, "slow_s": slow_s}
    if beam_search:
        _, row["beam_s"] = timed(lambda: beam.decode(log_probs, "beam", model_name), repeat)
    a = pipeline.Analysis(clip, model_name, feats.numpy(), log_probs, ctc.greedy(log_probs))
    _, row["views_s"] = timed(lambda: all_views(a), repeat)
    row["analyse_s"] = t_decode + t_mfcc + t_model + t_greedy + row["views_s"]
    row["model_x_realtime"] = seconds / t_model
    row["analyse_x_realtime"] = seconds / row["analyse_s"]
    return row


def slower_path(model_name: str):
    """(name of the app's path, name of the plain path, function feats -> log-probs by the plain path), or None:
    a GRU or LSTM runs the bf16 C kernel (native.py) instead of float32 nn.GRU / nn.LSTM; without the kernels a GRU
    runs models.gru instead of nn.GRU, and an LSTM on a CPU with native bf16 PyTorch's bf16 copy instead of float32."""
    model = models.load(model_name)

    @torch.inference_mode()
    def plain(feats: torch.Tensor) -> np.ndarray:
        if isinstance(model.rnn, torch.nn.GRU):
            return model.fc(model.rnn(feats[None])[0]).log_softmax(-1)[0].numpy()  # nn.GRU itself
        return model(feats[None]).log_softmax(-1)[0].numpy()

    if isinstance(models.fast(model_name), models.KernelCopy):
        kind = type(model.rnn).__name__
        return f"bf16 {kind} kernel (models.fast)", f"nn.{kind} float32", plain
    if isinstance(model.rnn, torch.nn.GRU):
        return "models.gru", "nn.GRU", plain
    if isinstance(models.fast(model_name), models.BF16Copy):
        return "bf16 copy (models.fast)", "float32", plain
    return None


@torch.inference_mode()
def bench_int8(path: Path, seconds: float, model_name: str, repeat: int) -> dict:
    """The opt-in int8 copy of a model: its speed, and how far its outputs are from the float model's."""
    feats = features.mfcc(audio.load(str(path)).samples)
    q = models.int8(model_name)
    lp, t = timed(lambda: q(feats[None]).log_softmax(-1)[0].numpy(), repeat)
    ref = pipeline.run_model(model_name, feats)
    return {"seconds": seconds, "model": model_name, "model_s": t, "model_x_realtime": seconds / t,
            "argmax_agreement": float((lp.argmax(1) == ref.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(np.exp(lp) - np.exp(ref)).max())}


def _vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of a running process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_server(clip: Path, timeout_s: float = 180) -> dict:
    """Cold start of `python app.py` until it answers; then its peak memory after two greedy analyses of
    `clip`, and again after a beam-search analysis (the default model), which loads the language models."""
    port = app_process.free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False")
    url = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not app_process.wait_until_answers(url, proc, timeout_s, poll_s=0.1):
            return {"cold_start_s": None, "server_error": f"app.py did not answer (exit {proc.poll()})"}
        cold = time.perf_counter() - start
        result = {"cold_start_s": cold, "server_rss_after_start_mb": _vm_hwm_mb(proc.pid)}
        from gradio_client import Client, handle_file
        client = Client(url, verbose=False)
        t0 = time.perf_counter()
        client.predict(handle_file(str(clip)), api_name="/transcribe")
        result["first_request_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.predict(handle_file(str(clip)), api_name="/transcribe")
        result["warm_request_s"] = time.perf_counter() - t0
        result["server_peak_rss_mb"] = _vm_hwm_mb(proc.pid)
        t0 = time.perf_counter()  # the first beam request also loads the two LMs
        client.predict(handle_file(str(clip)), pipeline.default_model(), "beam", api_name="/transcribe")
        result["first_beam_request_s"] = time.perf_counter() - t0
        result["server_peak_rss_beam_mb"] = _vm_hwm_mb(proc.pid)
        return result
    finally:
        app_process.stop(proc)


def bench_pocketsphinx(paths: dict[float, Path]) -> dict | None:
    """Seconds pocketsphinx (if installed, with its bundled en-us model) takes per clip."""
    try:
        from pocketsphinx import Decoder
    except ImportError:
        return None
    decoder = Decoder(loglevel="FATAL")
    out = {}
    for seconds, path in paths.items():
        clip = audio.load(str(path))
        pcm = (np.clip(clip.samples, -1, 1) * 32767).astype(np.int16).tobytes()
        start = time.perf_counter()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        out[seconds] = time.perf_counter() - start
    return out


def bench_train_step(model_name: str, repeat: int, clips: int = 24, frames: int = 500) -> dict:
    """Seconds per training step (forward, CTC loss, backward, AdamW) of `model_name` on one batch of the trainer's
    default shape (24 clips x 5 s = 12,000 frames), in float32 and under bfloat16 autocast (`train --bf16`)."""
    torch.manual_seed(0)
    model = models.build(models.card(model_name)).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-6)
    x, y = torch.randn(clips, frames, features.N_MFCC), torch.randint(1, 29, (clips, 60))
    xl, yl = torch.full((clips,), frames), torch.full((clips,), 60)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = torch.nn.functional.ctc_loss(logits.float().log_softmax(-1).transpose(0, 1), y, xl, yl, zero_infinity=True)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {"model": model_name, "frames": clips * frames}
    for key, bf16 in (("float32_s", False), ("bf16_s", True)):
        out[key] = timed(lambda: step(bf16), repeat)[1]
    out["bf16_speedup"] = out["float32_s"] / out["bf16_s"]
    return out


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.is_available(),
            "load_average_1min": os.getloadavg()[0], "bf16_native": models.bf16_native(),
            "rnn_kernels": native.status()}


def run(seconds_list, model_names, repeat: int, server: bool, beam_search: bool, sphinx: bool = True,
        int8: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="asr-bench-") as tmp:
        paths = {s: make_clip(s, Path(tmp)) for s in seconds_list}
        for name in model_names:  # load (and warm up) each model once: that cost is the cold start's
            pipeline.run_model(name, features.mfcc(np.zeros(audio.SAMPLE_RATE, np.float32)))
        rows = [bench_clip(paths[s], s, name, repeat, beam_search) for s in seconds_list for name in model_names]
        result = {"machine": machine(), "targets": TARGETS, "clips": rows}
        if int8:
            result["int8"] = [bench_int8(paths[s], s, name, repeat) for s in seconds_list for name in model_names]
        sphinx_s = bench_pocketsphinx(paths) if sphinx else None
        if sphinx_s is not None:
            result["pocketsphinx_s"] = sphinx_s
        result["bench_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if server:
            clip_s = 10 if 10 in paths else max(paths)
            result["server"] = {"clip_s": clip_s, **bench_server(paths[clip_s])}
    return result


def _ms(x) -> str:
    return "—" if x is None else f"{1000 * x:8.1f}"


def table(r: dict) -> str:
    m = r["machine"]
    lines = [f"machine: {m['cores']} cores ({m['cpu']}), torch {m['torch']} with {m['torch_threads']} thread(s), "
             f"GPU: {'yes' if m['gpu'] else 'no'}; load average {m['load_average_1min']:.1f} when it started",
             f"GRU/LSTM C kernels (asr_core/native.py): {m['rnn_kernels']}", "",
             "clip   model  decode+resample  MFCC   model   greedy    beam   views | analysis  model xRT  total xRT",
             "  s             ms               ms     ms      ms        ms     ms    |  ms"]
    for c in r["clips"]:
        lines.append(f"{c['seconds']:4g}  {c['model']:>5}  {_ms(c['decode_s'])}  {_ms(c['mfcc_s'])} {_ms(c['model_s'])}"
                     f" {_ms(c['greedy_s'])} {_ms(c.get('beam_s'))} {_ms(c['views_s'])} | {_ms(c['analyse_s'])}"
                     f"  {c['model_x_realtime']:8.0f}x  {c['analyse_x_realtime']:8.1f}x")
    compared = [c for c in r["clips"] if "baseline" in c]
    if compared:
        lines.append("")
        for c in compared:
            b = c["baseline"]
            lines.append(f"{c['model']} on the {c['seconds']:g} s clip: {b['fast']} {_ms(c['model_s']).strip()} ms, "
                         f"{b['slow']} {_ms(b['slow_s']).strip()} ms ({b['slow_s'] / c['model_s']:.2f}x faster; "
                         f"{c['seconds'] / b['slow_s']:.0f}x real time through {b['slow']})")
    if r.get("int8"):
        lines.append("")
        lines.append("opt-in int8 copies (models.int8; outputs differ from the float model's):")
        for c in r["int8"]:
            lines.append(f"{c['model']} on the {c['seconds']:g} s clip: {_ms(c['model_s']).strip()} ms, "
                         f"{c['model_x_realtime']:.0f}x real time; best symbol agrees with the float model on "
                         f"{100 * c['argmax_agreement']:.1f}% of frames, largest probability difference "
                         f"{c['max_prob_diff']:.2f}")
    sphinx = r.get("pocketsphinx_s")
    if sphinx:
        lines.append("")
        for s, t in sphinx.items():
            ours = min(c["analyse_s"] for c in r["clips"] if c["seconds"] == float(s))
            lines.append(f"pocketsphinx {float(s):g} s clip: {_ms(t)} ms  (fastest full analysis here: {_ms(ours)} ms, "
                         f"ratio {t / ours:.1f})")
    lines.append("")
    lines.append(f"peak memory of this benchmark process: {r['bench_peak_rss_mb']:.0f} MB")
    if "server" in r:
        s = r["server"]
        if s.get("cold_start_s") is None:
            lines.append(f"server: {s.get('server_error')}")
        else:
            lines.append(f"cold start (python app.py until it answers): {s['cold_start_s']:.1f} s; "
                         f"first request {s['first_request_s']:.2f} s, next {s['warm_request_s']:.2f} s; "
                         f"server peak memory {s['server_peak_rss_mb']:.0f} MB ({s['clip_s']:g} s clip, greedy), "
                         f"{s['server_peak_rss_beam_mb']:.0f} MB after a beam request "
                         f"(the first, which loads the LMs: {s['first_beam_request_s']:.2f} s)")
    t = r["targets"]
    lines.append(f"targets: 10 s clip analysed <= {t['analyse_10s_s']} s; model >= {t['model_x_realtime']}x real time; "
                 f"cold start <= {t['cold_start_s']} s; memory <= {t['peak_rss_mb']} MB")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    p.add_argument("--seconds", type=float, nargs="+", default=[1, 10, 30], help="clip lengths (at most 30)")
    p.add_argument("--models", nargs="+", default=None, help="default: every shipped model")
    p.add_argument("--repeat", type=int, default=3, help="runs per stage; the median is kept")
    p.add_argument("--no-server", action="store_true", help="skip the cold start of app.py")
    p.add_argument("--no-beam", action="store_true", help="skip the beam search")
    p.add_argument("--no-pocketsphinx", action="store_true", help="skip the pocketsphinx comparison")
    p.add_argument("--int8", action="store_true", help="also time the opt-in int8 copies of the models")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the app uses 1)")
    p.add_argument("--train-step", action="store_true",
                   help="instead: seconds per training step of each model, float32 and bf16 (train --bf16)")
    args = p.parse_args(argv)
    if args.train_step:
        torch.set_num_threads(max(1, args.threads))
        rows = [bench_train_step(n, max(1, args.repeat)) for n in (args.models or models.available())]
        print(json.dumps({"machine": machine(), "train_step": rows}, indent=2) if args.json else "\n".join(
            f"{r['model']:5} training step ({r['frames']} frames): float32 {r['float32_s']:.3f} s, bf16 "
            f"{r['bf16_s']:.3f} s, {r['bf16_speedup']:.2f}x" for r in rows))
        return 0
    if any(s <= 0 or s > 30 for s in args.seconds):
        p.error("--seconds must be in (0, 30]")
    torch.set_num_threads(max(1, args.threads))
    names = args.models or models.available()
    r = run(args.seconds, names, max(1, args.repeat), not args.no_server, not args.no_beam, not args.no_pocketsphinx,
            args.int8)
    print(json.dumps(r, indent=2) if args.json else table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
