"""Safety properties, checked on the source (static) and on a running server (dynamic).

- weights come only from safetensors: nothing in the project unpickles (torch.load, pickle, joblib,
  np.load with allow_pickle), and no pickle-format weight file is shipped;
- no shell: no shell=True, os.system, os.popen, eval or exec; programs get argument lists;
- messages never echo the uploaded file's path; a hostile file name executes nothing;
- the server listens on 127.0.0.1 unless GRADIO_SERVER_NAME says otherwise.
"""
from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from asr_core.app_process import free_port, stop, wait_until_answers

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted([REPO / "app.py", *(REPO / "asr_core").rglob("*.py"), *(REPO / "scripts").rglob("*.py"),
                  *(REPO / "tests").rglob("*.py")])
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "shelve", "marshal"}
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib", ".npy", ".npz"}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}


def calls(tree: ast.AST):
    """(dotted name of the called function, Call node) for every call in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            parts.append(f.id if isinstance(f, ast.Name) else "<expression>")  # `nn.GRU(...).eval()` is no eval
            yield ".".join(reversed(parts)), node


@pytest.fixture(scope="module")
def trees():
    return {p.relative_to(REPO): ast.parse(p.read_text(), str(p)) for p in SOURCES}


def test_nothing_is_unpickled(trees):
    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{path}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in PICKLE_MODULES]
        for name, node in calls(tree):
            kwargs = {k.arg: k.value for k in node.keywords}
            if name in {"torch.load", "torch.jit.load", "torch.serialization.load"}:
                found.append(f"{path}:{node.lineno} calls {name}")
            if name.split(".")[-1] == "load" and isinstance(kwargs.get("allow_pickle"), ast.Constant) \
                    and kwargs["allow_pickle"].value:
                found.append(f"{path}:{node.lineno} np.load(allow_pickle=True)")
    assert not found, found


def test_weights_are_safetensors_only():
    shipped = [p for p in (REPO / "assets").rglob("*") if p.is_file()]
    assert not [p for p in shipped if p.suffix in PICKLE_SUFFIXES]
    models = REPO / "assets" / "models"
    for card in models.glob("*.json"):
        assert (models / f"{card.stem}.safetensors").exists(), card
    source = (REPO / "asr_core" / "models.py").read_text()
    assert "from safetensors.torch import" in source and "load_file" in source


def test_no_shell(trees):
    found = []
    for path, tree in trees.items():
        for name, node in calls(tree):
            short = name.split(".")[-1]
            if name in {"os.system", "os.popen", "eval", "exec", "os.execl", "os.spawnl"} or name.startswith("os.popen"):
                found.append(f"{path}:{node.lineno} {name}")
            if name.startswith("subprocess.") and short in SUBPROCESS_CALLS:
                if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                       for k in node.keywords):
                    found.append(f"{path}:{node.lineno} {name}(shell=...)")
                if node.args and isinstance(node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp):
                    found.append(f"{path}:{node.lineno} {name} with a command string")
                if short in {"getoutput", "getstatusoutput"}:
                    found.append(f"{path}:{node.lineno} {name} runs a shell")
    assert not found, found


def test_audio_errors_never_mention_the_path():
    """The user-facing messages of the audio stage are built without the file's path."""
    tree = ast.parse((REPO / "asr_core" / "audio.py").read_text())
    for name, node in calls(tree):
        if name == "AudioError":
            used = {n.id for arg in node.args for n in ast.walk(arg) if isinstance(n, ast.Name)}
            assert "path" not in used, f"audio.py:{node.lineno} puts the path in a message"


def test_hostile_file_name_is_only_data(app_server, tmp_path):
    """A file name full of shell syntax is refused with a message that neither runs nor repeats it."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    marker = "PWNED_" + str(os.getpid())
    evil = tmp_path / f"x;touch {marker};$(touch {marker}b)`touch {marker}c`.wav"
    evil.write_text("not audio at all")
    client = Client(app_server, verbose=False)
    with pytest.raises(AppError) as e:
        client.predict(handle_file(str(evil)), "rnn", "greedy", api_name="/transcribe")
    message = str(e.value)
    assert "could not be read as audio" in message
    assert marker not in message and "touch" not in message and "/tmp" not in message
    for where in (REPO, Path("/tmp"), Path.home(), tmp_path):
        assert not list(where.glob(f"{marker}*")), f"a command ran: {where}"


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                if len(addr) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(addr)[::-1]))
                else:
                    raw = bytes.fromhex(addr)
                    found.add(socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))))
    return found


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc to see listening sockets")
def test_server_binds_loopback_by_default(tmp_path):
    """`python app.py` with no GRADIO_SERVER_NAME listens on 127.0.0.1 only."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_SERVER_NAME"}
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False")
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until_answers(f"http://127.0.0.1:{port}/", proc, 180), log.read_text()[-2000:]
        assert _listening_addresses(port) == {"127.0.0.1"}
    finally:
        stop(proc)
