"""The synthesized-speech generator: an interrupted run, started again, makes the clips an uninterrupted one makes."""
import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from asr_core import data, synth

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


def test_the_wide_set_draws_many_variants_of_the_training_voices_only_and_resumes_the_same(tmp_path, texts, monkeypatch):
    whole, resumed = tmp_path / "synth-wide", tmp_path / "resumed"
    synth.main(["--wide", "--count", "30", "--out", str(whole)])
    synth.main(["--wide", "--count", "7", "--out", str(resumed)])
    synth.main(["--wide", "--count", "30", "--out", str(resumed)])
    rows = manifest(whole)
    assert rows == manifest(resumed) and len(rows) == 30
    train_voices = [f"espeak:{v}" for v in synth.ESPEAK_VOICES] + [f"flite:{v}" for v in synth.FLITE_VOICES]
    train_voices = [v for v in train_voices if v not in synth.HELD_OUT_VOICES]
    assert [r[1] for r in rows[:10]] == train_voices and {r[2] for r in rows} == {"train"}
    variants = synth.all_variants()
    assert len(variants) > 3 * len(synth.ESPEAK_VARIANTS)   # espeak-ng 1.51 installs 101
    used = {r[4].split()[1].split("+")[1] for r in rows if r[1].startswith("espeak") and "+" in r[4].split()[1]}
    assert len(used) >= 10 and {"+" + u for u in used} <= set(variants)
    assert all("int_f0_target_mean=" in r[4] for r in rows if r[1].startswith("flite"))
    for r in rows:
        a, rate = sf.read(whole / f"{r[0]}.flac")
        assert rate == 16000 and len(a) > 1600 and np.array_equal(a, sf.read(resumed / f"{r[0]}.flac")[0])
    # asr_core.data reads it as the corpus "synthwide": all 30 for training, none for test
    monkeypatch.setattr(data, "CACHE", tmp_path)
    utts = data.CORPORA["synthwide"]("train")
    assert [u.uid for u in utts] == [r[0] for r in rows] and data.CORPORA["synthwide"]("test") == []
