"""`python app.py` as a child process, for the bench, the tests and the load test: a free port, waiting
until the server answers, stopping it.

    port = free_port()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=...)
    try:
        if not wait_until_answers(f"http://127.0.0.1:{port}/", proc, timeout_s=300):
            ...  # it exited, or did not answer in time
    finally:
        stop(proc)
"""
from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    """Does `url` answer HTTP 200 (within 5 s)?"""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status == 200
    except OSError:
        return False


def wait_until_answers(url: str, proc: subprocess.Popen, timeout_s: float, poll_s: float = 0.5) -> bool:
    """Poll `url` until the server answers: True; False as soon as `proc` has exited or after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def stop(proc: subprocess.Popen, grace_s: float = 20) -> None:
    """Ask the process to end (SIGTERM); kill it if it is still running after `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
