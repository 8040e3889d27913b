"""The synthesized-speech generator: an interrupted run, started again, makes the clips an uninterrupted one makes."""
import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from asr_core import synth

pytestmark = pytest.mark.skipif(not (shutil.which("espeak-ng") and shutil.which("flite")), reason="needs espeak-ng and flite")

SENTENCES = ["the cat sat on the mat", "printing in the only sense with which we are concerned",
             "a red apple fell down", "speech to text is hard", "good morning to you all"]


@pytest.fixture
def texts(tmp_path, monkeypatch):
    root = tmp_path / "data" / "ljspeech-subset"
    root.mkdir(parents=True)
    (root / "metadata.csv").write_text("".join(f"LJ{i:03d}|{t}|{t}\n" for i, t in enumerate(SENTENCES)))
    monkeypatch.setattr(synth, "DATA", tmp_path / "data")


def manifest(folder):
    return list(csv.reader(open(folder / "manifest.tsv"), delimiter="\t"))


def test_a_resumed_run_makes_the_same_clips_as_an_uninterrupted_one(tmp_path, texts):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    synth.main(["--count", "13", "--out", str(whole)])
    synth.main(["--count", "5", "--out", str(resumed)])     # stopped early ...
    synth.main(["--count", "13", "--out", str(resumed)])    # ... and started again
    rows = manifest(whole)
    assert rows == manifest(resumed) and len(rows) == 13
    # every voice in turn, the held-out ones marked test, and the same audio clip for clip
    assert [r[1] for r in rows[:12]] == [f"espeak:{v}" for v in synth.ESPEAK_VOICES] + [f"flite:{v}" for v in synth.FLITE_VOICES]
    assert {r[1] for r in rows if r[2] == "test"} == synth.HELD_OUT_VOICES
    assert {r[3] for r in rows} <= set(SENTENCES)
    for r in rows:
        a, rate = sf.read(whole / f"{r[0]}.flac")
        b, _ = sf.read(resumed / f"{r[0]}.flac")
        assert rate == 16000 and len(a) > 1600 and np.array_equal(a, b)
