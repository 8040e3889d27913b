"""`python -m asr_core.bench` runs and reports every figure (a tiny run; timings are never asserted)."""
import json
import subprocess
import sys
from pathlib import Path

from asr_core import models, native

REPO = Path(__file__).resolve().parents[1]
STAGES = ["decode_s", "mfcc_s", "model_s", "greedy_s", "beam_s", "views_s", "analyse_s", "model_x_realtime"]


def bench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "asr_core.bench", "--seconds", "1", "--models", "rnn", "--repeat", "1",
           "--no-server", "--no-pocketsphinx", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def test_json_has_every_stage():
    r = bench("--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    (row,) = out["clips"]
    assert row["seconds"] == 1 and row["model"] == "rnn"
    for key in STAGES:
        assert row[key] > 0, key
    assert out["bench_peak_rss_mb"] > 0 and out["machine"]["cores"] >= 1
    assert set(out["targets"]) == {"analyse_10s_s", "model_x_realtime", "cold_start_s", "peak_rss_mb"}


def test_gru_fast_path_compared_and_int8_opt_in():
    """For a GRU the bench also times nn.GRU itself (for a bf16 LSTM, its float32 self) and says whether the C kernel ran; --int8 times the int8 copy and says how far it is from the
    float model. Torch runs with one thread, as in the app."""
    r = subprocess.run([sys.executable, "-m", "asr_core.bench", "--seconds", "1", "--models", "gru", "lstm", "--repeat", "1",
                        "--no-server", "--no-pocketsphinx", "--no-beam", "--int8", "--json"],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["machine"]["torch_threads"] == 1
    gru, lstm = sorted(out["clips"], key=lambda c: c["model"])
    assert gru["baseline"]["slow"].startswith("nn.GRU") and gru["baseline"]["slow_s"] > 0 and gru["model_s"] > 0
    # the GRU's app path is the C kernel exactly where it builds here, else models.gru (numpy)
    assert ("kernel" in gru["baseline"]["fast"]) == (native.kernel() is not None)
    assert out["machine"]["rnn_kernels"] == native.status()
    # the LSTM is compared with its float32 self exactly where the app runs a bf16 copy (the kernel or PyTorch's)
    assert ("baseline" in lstm) == models.is_bf16_copy(models.fast("lstm"))
    assert ("kernel" in lstm.get("baseline", {}).get("fast", "")) == (native.kernel() is not None)
    assert all(q["model_s"] > 0 and 0.5 < q["argmax_agreement"] <= 1 and q["max_prob_diff"] > 0 for q in out["int8"])


def test_table():
    r = bench("--no-beam")
    assert r.returncode == 0, r.stderr
    assert "decode+resample" in r.stdout and "model xRT" in r.stdout and "peak memory" in r.stdout
    assert "   1    rnn" in r.stdout


def test_rejects_long_clips():
    r = subprocess.run([sys.executable, "-m", "asr_core.bench", "--seconds", "45"], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--seconds" in r.stderr


def test_train_step_times_float32_and_bf16():
    """`--train-step` times one training step of the trainer's batch shape in float32 and under bf16 autocast."""
    r = subprocess.run([sys.executable, "-m", "asr_core.bench", "--train-step", "--models", "rnn", "--repeat", "1",
                        "--json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["train_step"]
    assert row["model"] == "rnn" and row["frames"] == 12000
    assert row["float32_s"] > 0 and row["bf16_s"] > 0
    assert row["bf16_speedup"] == row["float32_s"] / row["bf16_s"]
