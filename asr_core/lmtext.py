"""Everyday English for the language models, from two Debian packages (nothing is downloaded):

    apt-get install wordnet-base fortunes

The LJ Speech sentences are 19th-century non-fiction read aloud ("the latter state of newgate was worse");
speechocean762's prompts are short everyday sentences ("do you want to know my wish"), and its train
transcripts are only 2,300. Debian ships two collections of plain modern English as text files:

- WordNet 3.0's usage examples, the quoted sentences in its glosses ("the prisoners were appallingly thin"): 42,786;
- the `fortunes` package's sayings and quotations, split into sentences: 21,897 (a few topic files
  are left out: technical ones full of code and commands, and ones a classroom would not want to weigh).

Sentences are normalized like every transcript (asr_core.vocab.normalize_text) and kept when they have
3 to 25 words. asr_core.lm.texts() adds them to the training text of both LMs and removes any that equal
a test or dev sentence.
"""
from __future__ import annotations

import re
from pathlib import Path

from .vocab import normalize_text

WORDNET = Path("/usr/share/wordnet")
FORTUNES = Path("/usr/share/games/fortunes")
FORTUNE_SKIP = {"ascii-art", "translate-me", "perl", "linux", "linuxcookie", "debian", "ethnic", "drugs",
                "men-women"}
MIN_WORDS, MAX_WORDS = 3, 25


def _keep(text: str) -> str | None:
    t = normalize_text(text)
    return t if t and MIN_WORDS <= len(t.split()) <= MAX_WORDS else None


def _need(path: Path, package: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{path} not found: the language models read it (apt-get install {package})")


def wordnet_examples(root: Path = WORDNET) -> list[str]:
    """The quoted usage examples of every synset gloss in WordNet's data.{noun,verb,adj,adv} files."""
    _need(root, "wordnet-base")
    out = set()
    for f in sorted(root.glob("data.*")):
        for line in f.read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or " | " not in line:  # the license header; lines without a gloss
                continue
            for quoted in re.findall(r'"([^"]+)"', line.split(" | ", 1)[1]):
                if t := _keep(quoted):
                    out.add(t)
    return sorted(out)


def fortune_sentences(root: Path = FORTUNES) -> list[str]:
    """Sentences of the fortunes (one file per topic, entries separated by lines holding "%"), without
    attribution lines ("-- Mark Twain")."""
    _need(root, "fortunes")
    out = set()
    for f in sorted(p for p in root.iterdir() if p.is_file() and "." not in p.name and p.name not in FORTUNE_SKIP):
        for entry in re.split(r"\n%\n", f.read_text(encoding="latin-1")):
            entry = re.sub(r"\n\s*--.*", " ", entry)
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(entry.split())):
                if t := _keep(sentence):
                    out.add(t)
    return sorted(out)
