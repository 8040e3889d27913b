"""scripts/fit_gap.py: the shipped models on speechocean762 clips of speakers they trained on, of the LM tuning
speakers and of the test speakers (real recorded speech; skipped without ../shared/data), and on the synthesized
voices heard in training against the held-out ones."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from asr_core import data, lm

ROOT = Path(__file__).resolve().parent.parent
needs_speechocean = pytest.mark.skipif(not (data.DATA / "speechocean762" / "train").exists()
                                       or not (data.DATA / "speechocean762" / "test").exists(),
                                       reason="needs ../shared/data")


def load_script():
    spec = importlib.util.spec_from_file_location("fit_gap", ROOT / "scripts" / "fit_gap.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@needs_speechocean
def test_the_three_sets_keep_their_speakers_apart():
    script = load_script()
    u = script.utterances(20)
    assert [len(v) for v in u.values()] == [20, 20, 20]
    speakers = {name: {x.speaker for x in utts} for name, utts in u.items()}
    dev = set(lm.dev_speakers())
    assert speakers["dev"] <= dev and not speakers["heard"] & dev
    assert not speakers["test"] & {x.speaker for x in data.speechocean("train")}
    assert len(speakers["heard"]) >= 15 and len(speakers["test"]) >= 15      # spread over many speakers


@needs_speechocean
def test_the_lstm_hears_the_speakers_it_trained_on_far_better_than_new_ones():
    """Measured on 300 clips each (README): heard CER 0.048, test 0.370; on 20 evenly spread clips the gap must show."""
    script = load_script()
    r = script.fit_gap("lstm", script.sets(20))
    assert set(r) == {"heard", "dev", "test"} and all(v["n"] == 20 for v in r.values())
    assert r["heard"]["cer"] < 0.5 * r["test"]["cer"]
    assert 0.0 <= r["heard"]["cer"] < r["test"]["cer"] <= 1.0


@needs_speechocean
def test_the_script_prints_one_row_per_model_named_as_given():
    path = "assets/models/rnn.safetensors"   # the same weights as a path: its row says so, not its card's name
    out = subprocess.run([sys.executable, "scripts/fit_gap.py", "--model", "rnn", path, "--limit", "5",
                          "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith(("rnn ", path))]
    assert [r.split()[0] for r in rows] == ["rnn", path]
    cells = [re.findall(r"(\d\.\d{3}) / (\d\.\d{3}) \(\s*(\d+)\)", r) for r in rows]
    assert cells[0] == cells[1]
    assert len(cells[0]) == 3 and all(n == "5" for _, _, n in cells[0])
    assert all(0.1 < float(cer) < min(0.8, float(wer)) for cer, wer, _ in cells[0])   # it hears some; words fare worse


@pytest.mark.skipif(not data.synthesized("test"), reason="needs the synthesized clips (python -m asr_core.synth)")
def test_with_synth_the_lstm_hears_its_training_voices_better_than_the_held_out_ones():
    """Measured on 300 clips each (training log): heard voices CER 0.088, held-out voices 0.290."""
    script = load_script()
    s = script.sets(20, "synth")
    assert list(s) == ["heard voices", "held-out voices"] and [len(v) for v in s.values()] == [20, 20]
    r = script.fit_gap("lstm", s)
    assert r["heard voices"]["cer"] < r["held-out voices"]["cer"]
    # a model given as a .safetensors path (its card beside it) is measured like the shipped name
    assert script.fit_gap(str(ROOT / "assets" / "models" / "lstm.safetensors"), s) == r
