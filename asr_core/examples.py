"""The example clips shown under the recorder: short sentences spoken by synthetic voices.

    python -m asr_core.examples        # (re)write assets/examples/*.wav and examples.tsv

Every clip is made here with espeak-ng or flite (programs called with argument lists, never a
shell), converted to 16 kHz mono 16-bit WAV, and listed in examples.tsv with the text it reads
(the reference transcript). Nothing is copied from a data set.

The page caches what an example click shows (gr.Examples, cache_examples=True) in
cache_dir(): a folder named for a hash of everything those outputs are computed from (the shipped
weights and cards, the clips, the code, the example rows, Gradio's version), so new weights or new
code never meet old cached outputs.
"""
from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .audio import SAMPLE_RATE, prepare

try:
    import fcntl  # POSIX file locks: which process writes a shared example cache
except ImportError:
    fcntl = None

REPO = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO / "assets" / "examples"
LISTING = EXAMPLES_DIR / "examples.tsv"
CACHE_ROOT = REPO / ".gradio" / "cached_examples"  # gitignored; the app's folder is writable on HF Spaces
UNUSED_CACHE_S = 24 * 3600  # cache folders nobody has started with for this long are removed
OWNER_FILE = "owner.pid"


@dataclass(frozen=True)
class Example:
    name: str    # file stem
    voice: str   # "espeak:<voice>[+variant]" or "flite:<voice>"
    text: str    # what the voice reads: the reference transcript

    @property
    def path(self) -> Path:
        return EXAMPLES_DIR / f"{self.name}.wav"


# A mix of voices; "cat" and "act" share one voice so that only the letter order differs.
EXAMPLES = [
    Example("hello_world", "espeak:en-us", "hello world"),
    Example("cat", "espeak:en-gb-x-rp", "cat"),
    Example("act", "espeak:en-gb-x-rp", "act"),
    Example("digits", "flite:kal16", "three one four one five"),
    Example("quick_brown_fox", "flite:rms", "the quick brown fox jumps over the lazy dog"),
    Example("commission", "flite:slt", "the commission reported its findings to the president in september"),
    Example("hello_world_f", "espeak:en-gb-scotland+f3", "hello world"),
    Example("long_sentence", "espeak:en-us+m3",
            "speech recognition turns sound into text one frame at a time and the network "
            "has to decide which letter it hears every ten milliseconds"),
]


def synthesize(voice: str, text: str) -> tuple:
    """Speak `text` with an espeak-ng or flite voice; returns (samples, rate) as the program wrote them."""
    engine, name = voice.split(":", 1)
    with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
        if engine == "espeak":
            cmd = ["espeak-ng", "-v", name, "-s", "150", "-w", tmp.name, text]
        elif engine == "flite":
            cmd = ["flite", "-voice", name, "-t", text, "-o", tmp.name]
        else:
            raise ValueError(f"unknown engine {engine!r}")
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        return sf.read(tmp.name)


def listing(path: Path = LISTING) -> list[Example]:
    """The examples as listed in examples.tsv (columns: file, voice, text)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Example(Path(r["file"]).stem, r["voice"], r["text"]) for r in rows]


def cache_inputs() -> list[Path]:
    """The files an example's cached outputs depend on: weights and model cards, the LM, the clips and
    their listing, and the code that analyses and draws them."""
    files = [*(REPO / "assets" / "models").glob("*"), *(REPO / "assets" / "lm").glob("*"),
             *EXAMPLES_DIR.glob("*"), *(REPO / "asr_core").glob("*.py"), REPO / "app.py"]
    return sorted(f for f in files if f.is_file())


def cache_key(files, extra: str = "") -> str:
    """A short hash of the files' names and bytes (and `extra`): changes when any byte does."""
    h = hashlib.sha256(extra.encode())
    for f in sorted(Path(f) for f in files):
        h.update(f"\0{f.name}\0{f.stat().st_size}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def cached_count(folder: Path) -> int:
    """How many examples Gradio has cached in `folder` (it keeps one <id>/indices.csv per gr.Examples)."""
    done = set()
    for f in folder.glob("*/indices.csv"):
        done |= {int(line) for line in f.read_text().split()}
    return len(done)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(folder: Path) -> int | None:
    """The process that fills a shared cache folder (or None)."""
    try:
        return int((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _prune(root: Path, keep: Path) -> None:
    """Remove the folders of processes that are gone, and folders nobody has started with for a day."""
    for old in root.glob("examples-*"):
        if old == keep or not old.is_dir():
            continue
        pid = old.name.rpartition("-pid")[2]
        if pid.isdigit():
            gone = not _alive(int(pid))
        else:
            gone = time.time() - old.stat().st_mtime > UNUSED_CACHE_S and not _alive(_owner(old))
        if gone:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def _locked(root: Path):
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed
        yield


def cache_dir(extra: str, count: int, root: Path = CACHE_ROOT) -> Path:
    """The folder for the cached outputs of `count` examples, for the current weights, clips and code
    (`extra`: the example rows and anything else they depend on).

    Several servers may start from one checkout (tests, helpers), and Gradio keeps its cache in one
    CSV file, so a shared folder has a single writer: the process named in its owner.pid. Others read
    it once it holds all `count` examples; until then they cache into a folder of their own. A
    folder whose owner died before finishing is emptied and taken over."""
    root.mkdir(parents=True, exist_ok=True)
    shared = root / f"examples-{cache_key(cache_inputs(), extra)}"
    if fcntl is None:  # no file locks (Windows): one server per checkout, as Gradio itself assumes
        return shared
    with _locked(root):
        _prune(root, keep=shared)
        if cached_count(shared) >= count:  # complete: only read from now on
            os.utime(shared)
            return shared
        owner = _owner(shared)
        if owner != os.getpid() and _alive(owner):  # another live process is filling it
            own = root / f"{shared.name}-pid{os.getpid()}"
            shutil.rmtree(own, ignore_errors=True)  # left by an earlier process with this pid
            return own
        shutil.rmtree(shared, ignore_errors=True)  # a dead owner's partial cache: start again
        shared.mkdir()
        (shared / OWNER_FILE).write_text(str(os.getpid()))
        return shared


def use_cache_dir(extra: str, count: int) -> Path:
    """Point Gradio's example cache (GRADIO_EXAMPLES_CACHE, read when gr.Examples is built) at cache_dir().

    Gradio keeps the cached outputs in a CSV file, one figure's JSON per field; a long clip's figures
    are far over the csv module's default field limit (128 kB), so the limit is lifted."""
    folder = cache_dir(extra, count)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(folder)
    csv.field_size_limit(2**31 - 1)
    return folder


def main() -> None:
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    with open(LISTING, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["file", "voice", "text"])
        for ex in EXAMPLES:
            clip = prepare(*synthesize(ex.voice, ex.text))  # mono, 16 kHz, float32
            sf.write(ex.path, clip.samples, SAMPLE_RATE, subtype="PCM_16")
            w.writerow([ex.path.name, ex.voice, ex.text])
            print(f"{ex.path.name:22s} {clip.seconds:5.2f} s  {ex.voice:26s} {ex.text}")


if __name__ == "__main__":
    main()
