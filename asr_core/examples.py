"""The example clips shown under the recorder: short sentences spoken by synthetic voices.

    python -m asr_core.examples        # (re)write assets/examples/*.wav and examples.tsv

Every clip is made here with espeak-ng or flite (programs called with argument lists, never a
shell), converted to 16 kHz mono 16-bit WAV, and listed in examples.tsv with the text it reads
(the reference transcript). Nothing is copied from a data set.
"""
from __future__ import annotations

import csv
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from .audio import SAMPLE_RATE, prepare

EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"
LISTING = EXAMPLES_DIR / "examples.tsv"


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
