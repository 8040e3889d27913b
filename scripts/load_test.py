"""Many users at once: N concurrent gradio_client users, each sending R requests with a 10 s clip.

    python scripts/load_test.py                       # starts `python app.py` on a free loopback port
    python scripts/load_test.py --url http://127.0.0.1:7860/ --users 20 --requests 5

Prints every failure and the latency percentiles (p50/p95/max: time from submitting a request to its
result, queueing included). Bounded: at most users x requests calls, none started after --max-seconds,
and only loopback addresses are accepted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr_core import app_process, pipeline  # noqa: E402
from asr_core.bench import make_clip  # noqa: E402


def start_server() -> tuple[subprocess.Popen, str]:
    port = app_process.free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    if not app_process.wait_until_answers(url, proc, timeout_s=300):
        app_process.stop(proc)
        raise SystemExit("app.py did not start")
    return proc, url


def user(url: str, clip: Path, requests: int, model: str | None, deadline: float, latencies: list,
         failures: list, lock: threading.Lock) -> None:
    from gradio_client import Client, handle_file
    try:
        client = Client(url, verbose=False)
    except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the others
        with lock:
            failures.append(f"connect: {type(e).__name__}: {e}")
        return
    for _ in range(requests):
        if time.monotonic() > deadline:
            with lock:
                failures.append("not sent: time limit reached")
            continue
        start = time.perf_counter()
        try:
            args = [handle_file(str(clip)), model, "greedy"]
            text = client.submit(*args, api_name="/transcribe").result(timeout=max(1.0, deadline - time.monotonic()))
            if not isinstance(text, (tuple, list)) or not isinstance(text[0], str):
                raise TypeError(f"unexpected result {type(text)}")
            with lock:
                latencies.append(time.perf_counter() - start)
        except Exception as e:  # noqa: BLE001
            with lock:
                failures.append(f"{type(e).__name__}: {str(e)[:200]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app on this machine (default: start one)")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--requests", type=int, default=5, help="requests per user")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--model", help="model name (default: the app's default)")
    p.add_argument("--max-seconds", type=float, default=900, help="no request is started after this")
    args = p.parse_args(argv)
    if not (1 <= args.users <= 100 and 1 <= args.requests <= 50):
        p.error("at most 100 users and 50 requests each")
    if args.url and urllib.parse.urlparse(args.url).hostname not in {"127.0.0.1", "localhost", "::1"}:
        p.error("this load test only talks to a server on this machine (127.0.0.1)")

    model = args.model or pipeline.default_model()
    proc = None
    with tempfile.TemporaryDirectory(prefix="asr-load-") as tmp:
        clip = make_clip(args.seconds, Path(tmp))
        if args.url:
            url = args.url
        else:
            proc, url = start_server()
        try:
            latencies, failures, lock = [], [], threading.Lock()
            start = time.perf_counter()
            deadline = time.monotonic() + args.max_seconds
            threads = [threading.Thread(target=user, args=(url, clip, args.requests, model, deadline,
                                                           latencies, failures, lock))
                       for _ in range(args.users)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - start
        finally:
            if proc is not None:
                app_process.stop(proc)

    total = args.users * args.requests
    print(f"{args.users} users x {args.requests} requests, {args.seconds:g} s clip, model {model}, against {url}")
    print(f"ok: {len(latencies)}/{total}   failed: {len(failures)}   wall time: {wall:.1f} s   "
          f"throughput: {len(latencies) / wall:.2f} requests/s ({len(latencies) * args.seconds / wall:.1f} s of audio per s)")
    for f in sorted(set(failures)):
        print(f"  failure x{failures.count(f)}: {f}")
    if latencies:
        q = statistics.quantiles(latencies, n=20) if len(latencies) > 1 else latencies * 19
        print(f"latency: p50 {statistics.median(latencies):.2f} s   p95 {q[18]:.2f} s   max {max(latencies):.2f} s   "
              f"min {min(latencies):.2f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
