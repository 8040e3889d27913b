"""The paired speaker bootstrap of `python -m asr_core.compare`: its counts against jiwer, its resampling by
hand, and real comparisons of the shipped models on synthesized speech (and on speechocean762 where present)."""
import json
import shutil
import subprocess
import sys

import jiwer
import numpy as np
import pytest

from asr_core import audio, compare, ctc, data, evaluate, features, models

REFS = ["the cat sat", "a red apple", "good morning", "one two three", "speech to text", "hello world"]
HYPS = ["the cat sad", "a rod aple", "", "one to three four", "speech to text", "hell o world"]


def test_edit_counts_add_up_to_jiwers_corpus_rates():
    c = compare.edit_counts(REFS, HYPS)
    assert c["char_edits"].sum() / c["chars"].sum() == pytest.approx(jiwer.cer(REFS, HYPS))
    assert c["word_edits"].sum() / c["words"].sum() == pytest.approx(jiwer.wer(REFS, HYPS))
    assert c["chars"].tolist() == [len(r) for r in REFS] and c["words"].tolist() == [len(r.split()) for r in REFS]
    assert c["char_edits"][4] == 0 and c["char_edits"][2] == len(REFS[2])   # a perfect and an empty hypothesis
    assert c["word_edits"][3] == 2                                            # "two" -> "to", "four" inserted


def test_each_draw_takes_whole_speakers_with_replacement():
    speakers = ["a", "a", "b", "c", "c", "c", "d"]
    draws = compare.speaker_draws(speakers, 50, seed=3)
    rng = np.random.default_rng(3)                                  # by hand: 4 speakers drawn 4 times each
    names = ["a", "b", "c", "d"]
    index = {"a": [0, 1], "b": [2], "c": [3, 4, 5], "d": [6]}
    for d in draws:
        expected = [i for j in rng.integers(0, 4, 4) for i in index[names[j]]]
        assert d.tolist() == expected
    assert any(len(set(d.tolist())) < len(d) for d in draws)          # some speaker drawn twice somewhere
    assert all(np.array_equal(a, b) for a, b in zip(draws, compare.speaker_draws(speakers, 50, seed=3)))


def test_paired_difference_and_its_interval():
    speakers = [s for s in "abcdefghij" for _ in range(3)]
    lengths = np.full(30, 20)
    base = np.random.default_rng(0).integers(4, 12, 30)
    draws = compare.speaker_draws(speakers, 500)
    same = compare.paired_difference(base, base, lengths, draws)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    better = base - np.random.default_rng(1).integers(1, 3, 30)     # fewer edits on every utterance
    d = compare.paired_difference(base, better, lengths, draws)
    assert d["diff"] == round((better.sum() - base.sum()) / lengths.sum(), 4)
    assert d["low"] <= d["diff"] <= d["high"] < 0
    noisy = base + np.random.default_rng(2).integers(-3, 4, 30)     # as often better as worse
    n = compare.paired_difference(base, noisy, lengths, draws)
    assert n["low"] < 0 < n["high"] and n["high"] - n["low"] > d["high"] - d["low"]


@pytest.fixture(scope="module")
def synthesized(make_speech):
    """Six clips by three synthesized 'speakers' (voices), as (features, reference) pairs."""
    voices = ["espeak:en-us", "espeak:en-gb", "flite:kal16"]
    items, speakers = [], []
    for i, text in enumerate(REFS):
        voice = voices[i % 3]
        items.append((features.mfcc(audio.load(str(make_speech(text, voice))).samples), text))
        speakers.append(voice)
    return items, speakers


def test_comparing_shipped_models_on_real_speech(synthesized, tmp_path):
    items, speakers = synthesized
    for ext in ("safetensors", "json"):                           # a candidate outside assets: a copy of the RNN
        shutil.copy(models.MODELS_DIR / f"rnn.{ext}", tmp_path / f"cand.{ext}")
    out = compare.compare(["rnn", "lstm", str(tmp_path / "cand.safetensors")], items, speakers, resamples=200)
    assert out["n_utts"] == 6 and out["n_speakers"] == 3 and list(out["models"]) == ["rnn", "lstm",
                                                                                      str(tmp_path / "cand.safetensors")]
    refs = [r for _, r in items]
    for name in ("rnn", "lstm"):                                  # the same numbers evaluate reports, greedy
        hyps = [ctc.greedy(lp).text for lp in evaluate.log_probs(name, [f for f, _ in items])]
        assert {k: out["models"][name][k] for k in ("cer", "wer")} == evaluate.error_rates(refs, hyps)
    lstm, copy = out["models"]["lstm"]["vs_baseline"], out["models"][str(tmp_path / "cand.safetensors")]["vs_baseline"]
    # the difference is rounded from the unrounded rates, each rate from its own: they may differ in the 4th decimal
    assert lstm["cer"]["diff"] == pytest.approx(out["models"]["lstm"]["cer"] - out["models"]["rnn"]["cer"], abs=1.5e-4)
    assert lstm["cer"]["diff"] < 0
    assert lstm["cer"]["low"] <= lstm["cer"]["diff"] <= lstm["cer"]["high"]
    assert copy == {"cer": {"diff": 0.0, "low": 0.0, "high": 0.0}, "wer": {"diff": 0.0, "low": 0.0, "high": 0.0}}
    assert "baseline" in compare.table(out) and "lstm" in compare.table(out)
    with pytest.raises(ValueError):
        compare.compare(["rnn", "lstm"], items, speakers[:-1])


def test_an_ensemble_is_the_renormalized_mean_of_its_members(synthesized):
    items, speakers = synthesized
    feats, refs = [f for f, _ in items], [r for _, r in items]
    teacher = str(models.MODELS_DIR.parent / "teachers" / "lstm3.safetensors")   # the students' 3-layer teacher
    lstm = evaluate.log_probs("lstm", feats)
    other = evaluate.log_probs("lstm3", feats, directory=models.MODELS_DIR.parent / "teachers")
    by_hand = []
    for a, b in zip(lstm, other):                                   # mean of the log-probabilities, then log-softmax
        m = (a.astype(np.float64) + b) / 2
        by_hand.append(m - np.log(np.exp(m).sum(-1, keepdims=True)))
    mixed = compare.ensemble_log_probs(f"lstm+{teacher}", feats)
    for got, want in zip(mixed, by_hand):
        np.testing.assert_allclose(got, want, atol=1e-4)
        np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, atol=1e-5)
    assert any(not np.allclose(g, a, atol=1e-3) for g, a in zip(mixed, lstm))   # not just one member
    out = compare.compare(["lstm", "lstm+lstm", f"lstm+{teacher}"], items, speakers, resamples=100)
    assert out["models"]["lstm+lstm"]["vs_baseline"]["cer"] == {"diff": 0.0, "low": 0.0, "high": 0.0}
    hyps = [ctc.greedy(lp).text for lp in by_hand]
    assert {k: out["models"][f"lstm+{teacher}"][k] for k in ("cer", "wer")} == evaluate.error_rates(refs, hyps)


@pytest.mark.parametrize("args, message", [(["rnn"], "at least one candidate"),
                                           (["rnn", "nosuch"], "unknown model"),
                                           (["rnn", "lstm+nosuch"], "unknown model"),
                                           (["rnn", "/tmp/absent.safetensors"], "card")])
def test_the_command_refuses_what_it_cannot_compare(args, message):
    r = subprocess.run([sys.executable, "-m", "asr_core.compare", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test").exists(), reason="needs ../shared/data")
def test_the_command_on_speechocean762_test(tmp_path):
    # 100 spread utterances: enough that the LSTM's lead over the GRU (0.36 vs 0.42 CER on the whole test set) is
    # outside the interval; with 40 it was not once the GRU improved (GRU card round 19: -0.0245 [-0.0495, +0.0038])
    n = 100
    out = tmp_path / "c.json"
    r = subprocess.run([sys.executable, "-m", "asr_core.compare", "gru", "lstm", "--limit", str(n), "--resamples",
                        "300", "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["n_utts"] == n and result["n_speakers"] > 30 and result["resamples"] == 300
    items = evaluate.samples("speechocean762", "test", n)
    hyps = [ctc.greedy(lp).text for lp in evaluate.log_probs("gru", [f for f, _ in items])]
    assert result["models"]["gru"]["cer"] == evaluate.error_rates([r for _, r in items], hyps)["cer"]
    assert result["models"]["lstm"]["vs_baseline"]["cer"]["high"] < 0   # the LSTM hears these speakers better
    assert f"speechocean762 test: {n} utterances" in r.stdout


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test").exists(), reason="needs ../shared/data")
def test_comparing_language_models_on_speechocean762_test(tmp_path):
    """scripts/compare_lms.py: the shipped LMs against a copy whose config drops the word model for the GRU."""
    from asr_core import beam, lm
    plain = tmp_path / "plain"
    shutil.copytree(lm.LM_DIR, plain)
    cfg = json.loads((plain / "config.json").read_text())
    cfg["models"]["gru"]["gamma"] = 0.0
    (plain / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "lms.json"
    r = subprocess.run([sys.executable, "scripts/compare_lms.py", "gru", str(plain), str(lm.LM_DIR), "--limit", "12",
                        "--resamples", "100", "--json", str(out)], capture_output=True, text=True, timeout=300,
                       cwd=lm.LM_DIR.parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    first, second = result["first"], result["second"]
    assert first["lm_dir"] == str(plain) and second["lm_dir"] == str(lm.LM_DIR) and first["weights"] == "gru"
    assert first["gamma"] == 0.0 and second["gamma"] == beam.settings("gru")["gamma"] > 0
    items = evaluate.samples("speechocean762", "test", 12)
    hyps = [beam.decode(lp, "beam", "gru") for lp in evaluate.log_probs("gru", [f for f, _ in items])]
    assert second["wer"] == evaluate.error_rates([r for _, r in items], hyps)["wer"]   # the shipped beam, as in the app
    d = result["second_minus_first"]["wer"]
    assert d["diff"] == pytest.approx(second["wer"] - first["wer"], abs=1e-3) and d["low"] <= d["diff"] <= d["high"]


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test").exists(), reason="needs ../shared/data")
def test_comparing_old_weights_with_their_own_lm_settings(tmp_path):
    """--first-model decodes the first side with other weights: a GRU whose output always says blank hears nothing."""
    from safetensors.torch import load_file, save_file
    from asr_core import lm, models
    mute = load_file(str(models.MODELS_DIR / "gru.safetensors"))
    mute["fc.weight"].zero_()
    mute["fc.bias"].fill_(-10.0)
    mute["fc.bias"][0] = 10.0   # index 0 is the CTC blank
    save_file(mute, str(tmp_path / "gru.safetensors"))
    shutil.copy(models.MODELS_DIR / "gru.json", tmp_path / "gru.json")
    out = tmp_path / "old.json"
    r = subprocess.run([sys.executable, "scripts/compare_lms.py", "gru", str(lm.LM_DIR), str(lm.LM_DIR), "--limit", "8",
                        "--resamples", "50", "--first-model", str(tmp_path / "gru.safetensors"), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=lm.LM_DIR.parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["first"]["cer"] == 1.0 and result["first"]["weights"] == str(tmp_path / "gru.safetensors")
    assert result["second_minus_first"]["cer"]["diff"] < -0.3   # the shipped GRU against the mute one, same LMs
    bad = subprocess.run([sys.executable, "scripts/compare_lms.py", "lstm", str(lm.LM_DIR), str(lm.LM_DIR),
                          "--first-model", str(tmp_path / "gru.safetensors")],
                         capture_output=True, text=True, timeout=120, cwd=lm.LM_DIR.parents[1])
    assert bad.returncode != 0 and "must hold a lstm model" in bad.stderr


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test").exists(), reason="needs ../shared/data")
def test_comparing_lms_runs_the_model_once_per_set_of_weights(tmp_path, monkeypatch):
    """Two LM directories with one model share its forward pass; --first-model adds exactly one more."""
    import importlib.util
    from asr_core import lm, models
    spec = importlib.util.spec_from_file_location("compare_lms", lm.LM_DIR.parents[1] / "scripts" / "compare_lms.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    calls = []
    real = evaluate.log_probs
    monkeypatch.setattr(evaluate, "log_probs", lambda *a, **k: calls.append(k.get("directory")) or real(*a, **k))
    for name in ("rnn.safetensors", "rnn.json"):
        shutil.copy(models.MODELS_DIR / name, tmp_path / name)
    common = ["rnn", str(lm.LM_DIR), str(lm.LM_DIR), "--limit", "4", "--resamples", "20"]
    script.main(common + ["--json", str(tmp_path / "a.json")])
    assert len(calls) == 1
    script.main(common + ["--first-model", str(tmp_path / "rnn.safetensors"), "--json", str(tmp_path / "b.json")])
    assert calls[1:] == [tmp_path, models.MODELS_DIR]   # the first side from the copy, the second shipped
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["first"]["cer"] == a["second"]["cer"] == b["first"]["cer"] == b["second"]["cer"]   # the same weights
