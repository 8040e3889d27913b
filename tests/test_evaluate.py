"""The evaluation script: error rates by hand, a run on synthesized clips, the model card update."""
import json
import math
import re
import subprocess
import sys

import jiwer
import numpy as np
import pytest
import torch

from asr_core import data, evaluate, models, pipeline

REPO = evaluate.models.MODELS_DIR.parents[1]


def test_error_rates_on_a_hand_made_pair():
    refs = ["the cat sat on the mat", "hello"]
    hyps = ["the cat sit on mat", "hello"]
    rates = evaluate.error_rates(refs, hyps)
    # words: "sat" -> "sit" and "the" deleted = 2 errors in 7 reference words
    assert rates["wer"] == pytest.approx(2 / 7, abs=1e-4)
    # characters: a -> i and "the " deleted = 5 edits in 27 reference characters
    assert rates["cer"] == pytest.approx(5 / 27, abs=1e-4)
    assert evaluate.error_rates(["same words"], ["same words"]) == {"cer": 0.0, "wer": 0.0}


def test_spread_covers_the_whole_list():
    picked = evaluate.spread(list(range(100)), 10)
    assert len(picked) == 10 and picked[0] == 0 and picked[-1] >= 90
    assert evaluate.spread([1, 2, 3], None) == [1, 2, 3]


def test_by_group_scores_each_group_alone(tmp_path):
    refs = ["the cat", "a dog", "red fox", "blue sky"]
    hyps = ["the cat", "a dig", "red", "blue sky"]
    groups = ["adults (18+)", "children (6-12)", "adults (18+)", "children (6-12)"]
    out = evaluate.by_group(refs, hyps, groups)
    assert list(out) == ["adults (18+)", "children (6-12)"]
    assert out["adults (18+)"] == {"n_utts": 2, **evaluate.error_rates(["the cat", "red fox"], ["the cat", "red"])}
    assert out["children (6-12)"]["cer"] == pytest.approx(1 / 13, abs=1e-4)  # one letter of "a dog" + "blue sky"
    table = tmp_path / "spk2age"
    table.write_text("1030\t27\n1046\t7\n2001 13\n2002 12\n\n")
    assert data.age_groups(table) == {"1030": "adults (18+)", "1046": "children (6-12)",
                                      "2001": "teenagers (13-17)", "2002": "children (6-12)"}


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test").exists(), reason="needs ../shared/data")
def test_age_breakdown_scores_each_speakers_group():
    """Each utterance is scored in its speaker's group (spk2age); items that do not follow the corpus get none."""
    utts = evaluate.spread(data.speechocean("test"), 60)
    refs = [u.text for u in utts]
    ages = data.age_groups(data.DATA / "speechocean762" / "test" / "spk2age")
    hyps = [r if ages[u.speaker] == "children (6-12)" else "" for r, u in zip(refs, utts)]  # only children heard
    out = evaluate.age_breakdown("test", refs, {"greedy": hyps}, limit=60)["greedy"]
    assert out["children (6-12)"]["cer"] == 0.0 and out["adults (18+)"]["cer"] == 1.0
    assert sum(g["n_utts"] for g in out.values()) == 60
    assert evaluate.age_breakdown("test", refs[::-1], {"greedy": hyps}, limit=60) == {}


@pytest.fixture(scope="module")
def synthesized_set(make_speech):
    texts = ["seven three one", "good morning everyone", "the weather is fine today"]
    return [data.Utterance(f"t{i}", str(make_speech(t, "espeak:en-us")), t, "espeak:en-us")
            for i, t in enumerate(texts)]


def test_evaluate_on_three_synthesized_clips(synthesized_set):
    model = pipeline.default_model()
    items = evaluate.audio_samples(synthesized_set)
    metrics, hyps = evaluate.score(model, items, ("greedy", "beam"))
    refs = [u.text for u in synthesized_set]
    assert metrics["n_utts"] == 3
    for decoder in ("greedy", "beam"):
        assert len(hyps[decoder]) == 3
        assert metrics[decoder]["cer"] == pytest.approx(jiwer.cer(refs, hyps[decoder]), abs=1e-4)
        assert metrics[decoder]["wer"] == pytest.approx(jiwer.wer(refs, hyps[decoder]), abs=1e-4)
        assert 0.0 <= metrics[decoder]["cer"] and math.isfinite(metrics[decoder]["cer"])
    # batched (padded) evaluation gives the same per-frame outputs as the model run one clip at a time (float32;
    # the app may run a bf16 copy of an LSTM, see models.fast and tests/test_models.py)
    for (feats, _), batched in zip(items, evaluate.log_probs(model, [f for f, _ in items])):
        with torch.inference_mode():
            alone = models.load(model)(feats[None]).log_softmax(-1)[0].numpy()
        assert np.allclose(batched, alone, atol=1e-4)
    if "UNTRAINED" not in models.card(model).get("status", ""):
        assert metrics["greedy"]["cer"] < 1.0 and metrics["beam"]["cer"] < 1.0


def test_write_card_keeps_other_keys(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"name": "m", "arch": {"type": "rnn"}, "parameters": 5,
                                                 "metrics": {"old": {"n_utts": 1}}}))
    results = {"speechocean762": {"split": "test", "speakers": "x", "n_utts": 2,
                                  "greedy": {"cer": 0.25, "wer": 0.5}, "beam": {"cer": 0.2, "wer": 0.4}}}
    evaluate.write_card("m", results, tmp_path)
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["name"] == "m" and card["parameters"] == 5 and card["arch"] == {"type": "rnn"}
    assert card["metrics"]["old"] == {"n_utts": 1} and card["metrics"]["speechocean762"]["n_utts"] == 2
    assert card["headline"] == {"cer": 0.25, "wer": 0.5, "dataset": "speechocean762", "split": "test",
                                "decoder": "greedy"}


def test_cli_refuses_to_write_a_card_from_a_subset():
    run = subprocess.run([sys.executable, "-m", "asr_core.evaluate", "--model", pipeline.default_model(),
                          "--limit", "5", "--write-card"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "--write-card needs the full test sets" in run.stderr


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "train").exists(), reason="needs ../shared/data")
def test_tune_chooses_word_lm_weights_on_dev_and_stores_them_per_model(tmp_path, monkeypatch):
    from asr_core import beam, lm
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"alpha": 0.5, "beta": 1.0, "beam": 16, "models": {"other": {"alpha": 0.1}}}))
    monkeypatch.setattr(lm, "CONFIG_FILE", config)
    # a tiny grid on four dev utterances: the word LM's weight 0 (from the character step) against 0.3 and 1.0
    monkeypatch.setattr(evaluate, "TUNE_ALPHAS", [0.6])
    monkeypatch.setattr(evaluate, "TUNE_BETAS", [1.0])
    monkeypatch.setattr(evaluate, "TUNE_GAMMAS", [0.3, 1.0])
    monkeypatch.setattr(evaluate, "TUNE_OOVS", [-3.0])
    model = pipeline.default_model()
    evaluate.tune(model, limit=4, width=4)
    cfg = json.loads(config.read_text())
    tuned = cfg["models"][model]
    assert cfg["models"]["other"] == {"alpha": 0.1}                     # other models are left alone
    assert tuned["alpha"] == 0.6 and tuned["beta"] == 1.0 and tuned["gamma"] in (0.0, 0.3, 1.0)
    assert tuned["oov"] == -3.0 and tuned["dev"]["n_utts"] == 4
    dev = tuned["dev"]
    best, char_only = dev["beam"], dev["beam_char_lm_only"]
    assert best["cer"] + best["wer"] <= char_only["cer"] + char_only["wer"]  # the word LM is kept only if it helps
    chosen = beam.settings(model)
    assert (chosen["alpha"], chosen["beta"], chosen["gamma"], chosen["oov"]) == (0.6, 1.0, tuned["gamma"], -3.0)


def _tune_with_a_made_up_scorer(monkeypatch, tmp_path, dropped: dict, betas: list, gammas: list, model: str,
                                speakers=("s1",), standing: dict | None = None, fresh=False) -> tuple:
    """evaluate.tune on one dev clip per speaker, the beam replaced by a scorer that drops the first words of the
    reference: dropped[(beta, gamma)] of them, or with a list, its i-th entry for clip i. The grid is alpha 0.6,
    oov -3 and the given betas and gammas; `standing`, if given, is the model's setting before. Returns the model's
    tuning and the (beta, gamma) of every decode."""
    from asr_core import beam, lm, wordlm
    ref, calls = "the cat sat on the mat", []

    def fake_beam(lp, beam, lm, alpha, beta, word_lm, gamma, oov):
        assert (word_lm is not None) == (gamma > 0)
        calls.append((beta, gamma))
        n = dropped[(beta, gamma)]
        return [type("Hyp", (), {"text": " ".join(ref.split()[n[int(lp[0, 0])] if isinstance(n, list) else n:])})()]

    config = tmp_path / "config.json"
    config.unlink(missing_ok=True)
    if standing:
        config.write_text(json.dumps({"alpha": 0.6, "beta": 1.0, "beam": 16, "models": {model: standing}}))
    monkeypatch.setattr(lm, "CONFIG_FILE", config)
    monkeypatch.setattr(lm, "load", lambda: object())
    monkeypatch.setattr(wordlm, "load", lambda: object())
    monkeypatch.setattr(lm, "dev_utterances", lambda: [type("Utt", (), {"speaker": s})() for s in speakers])
    monkeypatch.setattr(lm, "dev_speakers", lambda: list(speakers))
    monkeypatch.setattr(evaluate, "audio_samples", lambda utts, seed=None: [(torch.zeros(5, 40), ref)] * len(utts))
    monkeypatch.setattr(evaluate, "log_probs", lambda name, feats: [torch.full((5, 29), float(i))  # clip i's index
                                                                    for i in range(len(feats))])
    monkeypatch.setattr(beam, "beam_search", fake_beam)
    for name, values in (("TUNE_ALPHAS", [0.6]), ("TUNE_BETAS", betas), ("TUNE_GAMMAS", gammas), ("TUNE_OOVS", [-3.0])):
        monkeypatch.setattr(evaluate, name, values)
    return evaluate.tune(model, fresh=fresh)["models"][model], calls


def test_tune_searches_the_insertion_bonus_again_with_the_word_lm_even_when_it_lost_at_first(tmp_path, monkeypatch):
    """The word LM's per-word cost shifts the best beta: where it loses at the character LM's best beta but wins at
    another, the search with the word LM finds that."""
    dropped = {(1.0, 0.0): 1, (0.0, 0.0): 2, (1.0, 0.3): 2, (0.0, 0.3): 0}     # (beta, gamma) -> words dropped
    tuned, _ = _tune_with_a_made_up_scorer(monkeypatch, tmp_path, dropped, [0.0, 1.0], [0.3], "lstm")
    assert (tuned["beta"], tuned["gamma"], tuned["oov"]) == (0.0, 0.3, -3.0)
    assert tuned["dev"]["beam"]["wer"] == 0.0 and tuned["dev"]["beam_char_lm_only"]["beta"] == 1.0


def test_tune_goes_back_to_the_word_lm_weights_when_the_insertion_bonus_moved(tmp_path, monkeypatch):
    """Coordinate descent: after alpha x beta moved with the word LM on, gamma x oov is searched again there, and
    a better gamma found at the new beta is kept (the search that stopped after one pass of each ends at gamma 0.3
    with one word dropped)."""
    dropped = {(1.0, 0.0): 3, (0.0, 0.0): 4, (1.0, 0.3): 2, (1.0, 0.6): 3, (0.0, 0.3): 1, (0.0, 0.6): 0}
    tuned, calls = _tune_with_a_made_up_scorer(monkeypatch, tmp_path, dropped, [0.0, 1.0], [0.3, 0.6], "gru")
    assert (tuned["beta"], tuned["gamma"]) == (0.0, 0.6) and tuned["dev"]["beam"]["wer"] == 0.0
    assert sorted(calls) == sorted(dropped)  # every setting decoded once, and the search stopped


def _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped: dict, standing_beta: float, fresh=False) -> dict:
    """Three clips of three speakers, betas 0 and 1, gamma 0.3; the standing setting alpha 0.6, beta `standing_beta`,
    gamma 0.3, oov -3."""
    standing = {"alpha": 0.6, "beta": standing_beta, "gamma": 0.3, "oov": -3.0}
    return _tune_with_a_made_up_scorer(monkeypatch, tmp_path, dropped, [0.0, 1.0], [0.3], "gru",
                                       speakers=("s1", "s2", "s3"), standing=standing, fresh=fresh)[0]


CHARACTER_LM_ONLY = {(0.0, 0.0): [3, 3, 3], (1.0, 0.0): [3, 3, 3]}  # (beta, gamma) -> words dropped per clip


def test_tune_keeps_the_standing_setting_when_the_best_found_wins_on_one_speaker_only(tmp_path, monkeypatch):
    """Beta 0 drops fewer words in all (1 against 2) but only speaker s1 gains and s2 loses: resampling the
    speakers, the interval of the difference reaches above zero, so the standing beta 1 stays."""
    dropped = {**CHARACTER_LM_ONLY, (1.0, 0.3): [2, 0, 0], (0.0, 0.3): [0, 1, 0]}
    tuned = _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped, standing_beta=1.0)
    assert (tuned["alpha"], tuned["beta"], tuned["gamma"], tuned["oov"]) == (0.6, 1.0, 0.3, -3.0)
    dev = tuned["dev"]
    assert dev["best_found"]["beta"] == 0.0 and dev["best_found"]["wer"] == pytest.approx(1 / 18, abs=1e-4)
    assert dev["beam"]["wer"] == pytest.approx(2 / 18, abs=1e-4)              # the chosen (standing) setting's rates
    vs = dev["vs_standing"]
    assert not vs["clear"] and vs["diff"] < 0 < vs["high"] and vs["low"] < vs["diff"]
    fresh = _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped, standing_beta=1.0, fresh=True)
    assert fresh["beta"] == 0.0 and fresh["dev"]["vs_standing"] is None        # --fresh: the best found, as before
    assert dev["standing"] == {"alpha": 0.6, "beta": 1.0, "gamma": 0.3, "oov": -3.0}
    assert fresh["dev"]["standing"] is None


def test_tune_switches_when_the_best_found_wins_for_every_speaker(tmp_path, monkeypatch):
    dropped = {**CHARACTER_LM_ONLY, (1.0, 0.3): [1, 1, 1], (0.0, 0.3): [0, 0, 0]}
    tuned = _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped, standing_beta=1.0)
    assert tuned["beta"] == 0.0 and tuned["dev"]["beam"]["wer"] == 0.0
    vs = tuned["dev"]["vs_standing"]
    # each clip: "the " of 22 characters and 1 of 6 words fewer wrong
    assert vs["clear"] and vs["high"] < 0 and vs["diff"] == pytest.approx(-(4 / 22 + 1 / 6), abs=1e-4)


def test_tune_decodes_a_standing_setting_off_the_grid_and_keeps_it_when_it_is_best(tmp_path, monkeypatch):
    dropped = {**CHARACTER_LM_ONLY, (1.0, 0.3): [1, 1, 1], (0.0, 0.3): [2, 2, 2], (2.0, 0.3): [0, 0, 0]}
    tuned = _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped, standing_beta=2.0)
    assert tuned["beta"] == 2.0 and tuned["dev"]["beam"]["wer"] == 0.0 and tuned["dev"]["best_found"]["beta"] == 1.0
    assert tuned["dev"]["vs_standing"]["diff"] > 0 and not tuned["dev"]["vs_standing"]["clear"]


def test_tune_records_no_comparison_when_the_standing_setting_is_the_best_found(tmp_path, monkeypatch):
    dropped = {**CHARACTER_LM_ONLY, (1.0, 0.3): [0, 0, 0], (0.0, 0.3): [1, 1, 1]}
    tuned = _tune_from_a_standing_setting(monkeypatch, tmp_path, dropped, standing_beta=1.0)
    assert tuned["beta"] == 1.0 and tuned["dev"]["vs_standing"] is None and tuned["dev"]["best_found"]["beta"] == 1.0


def test_readme_model_table_matches_the_cards():
    """README's model table quotes each shipped card's speechocean762 test numbers (greedy and beam)."""
    rows = {}
    for line in (REPO / "README.md").read_text().splitlines():
        if line.startswith("| "):  # the first table that names a model is the model table
            rows.setdefault(line.split("|")[1].strip(), [c.strip() for c in line.split("|")[-5:-1]])
    for name in models.available():
        so = models.card(name)["metrics"]["speechocean762"]
        assert so["split"] == "test" and so["n_utts"] == 2000
        expected = [f"{so[d][k]:.3f}" for d in ("greedy", "beam") for k in ("cer", "wer")]
        assert rows[name] == expected, name


def _readme_table(header_start: str) -> dict[str, list[str]]:
    """The README table whose header row starts with `header_start`: model name -> its cells."""
    lines = (REPO / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.split("|")[1:-1]]
        rows[cells[0]] = cells[1:]
    return rows


def test_readme_per_corpus_and_age_tables_match_the_cards():
    """README's other two result tables (LJ Speech / FSDD / held-out voices, and speechocean762 by age) quote
    each shipped card too, greedy / beam, so a card re-written after a round cannot leave them behind."""
    pair = lambda r, k: f"{r['greedy'][k]:.3f} / {r['beam'][k]:.3f}"
    corpora, ages = _readme_table("| model | LJ Speech test"), _readme_table("| model | children")
    for name in models.available():
        m = models.card(name)["metrics"]
        assert corpora[name] == [pair(m["ljspeech"], "cer"), pair(m["fsdd"], "wer"), pair(m["synth"], "cer")], name
        by_age = m["speechocean762"]["by_age"]
        assert ages[name] == [f"{by_age['greedy'][g]['cer']:.3f} / {by_age['beam'][g]['cer']:.3f}"
                              for g in by_age["greedy"]], name   # children, teenagers, adults


def _github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_resolve_and_list_every_round_of_the_training_log():
    """README links to files that exist and to headings that exist in docs/training-log.md, and lists every one of
    the log's sections, so a round added to the log or a heading renamed cannot leave README behind."""
    readme = (REPO / "README.md").read_text()
    log = REPO / "docs" / "training-log.md"
    sections = [line[3:] for line in log.read_text().splitlines() if line.startswith("## ")]
    slugs = {_github_slug(t) for t in sections}
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    local = [(target, fragment) for target, fragment in links if not target.startswith("http")]
    assert len(local) > len(sections)
    for target, fragment in local:
        assert (REPO / target).exists(), target
        if fragment:
            assert target == "docs/training-log.md" and fragment in slugs, fragment
    listed = {fragment for target, fragment in local if fragment}
    assert listed == slugs - {"the-path-so-far"}


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "train").exists(), reason="needs ../shared/data")
def test_dev_clips_augmented_for_tuning_are_reproducible_and_harder(tmp_path, monkeypatch):
    """--dev-augment SEED: one draw of the training augmentation per dev clip, the same for the same seed, and
    the tuning records it."""
    from asr_core import lm
    utts = evaluate.spread(lm.dev_utterances(), 6)
    clean = evaluate.audio_samples(utts)
    a, b, c = (evaluate.audio_samples(utts, augment_seed=s) for s in (7, 7, 8))
    assert [r for _, r in a] == [r for _, r in clean]
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))                  # reproducible
    assert not any(x.shape == y.shape and torch.equal(x, y) for (x, _), (y, _) in zip(a, clean))  # every clip changed
    assert any(x.shape != y.shape or not torch.equal(x, y) for (x, _), (y, _) in zip(a, c))  # another seed, other draws
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"alpha": 0.5, "beta": 1.0, "beam": 16, "models": {}}))
    monkeypatch.setattr(lm, "CONFIG_FILE", config)
    for name, values in (("TUNE_ALPHAS", [0.6]), ("TUNE_BETAS", [1.0]), ("TUNE_GAMMAS", [0.3]), ("TUNE_OOVS", [-3.0])):
        monkeypatch.setattr(evaluate, name, values)
    evaluate.tune("rnn", limit=4, width=4, augment_seed=7)
    dev = json.loads(config.read_text())["models"]["rnn"]["dev"]
    assert dev["augment_seed"] == 7 and "seed 7" in dev["set"] and dev["n_utts"] == 4
