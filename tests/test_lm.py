"""The character n-gram language model: proper distributions, English over noise, no test text."""
import math

import numpy as np
import pytest

from asr_core import data, lm

# Written for these tests (not from any corpus).
ENGLISH = ["the students listened to the recording twice",
           "we walked home after the concert",
           "please write your name at the top of the page",
           "three four seven nine"]


@pytest.fixture(scope="module")
def shipped():
    model = lm.load()
    assert model is not None, "assets/lm/char_lm.json is missing: run python -m asr_core.lm"
    return model


@pytest.mark.parametrize("history", ["", "t", "the quick bro", "zzqx'", "     ", "a" * 40])
def test_next_symbol_distribution_sums_to_one(shipped, history):
    p = np.exp(shipped.next_log_probs(history))
    assert p.shape == (29,) and (p > 0).all()
    assert p.sum() == pytest.approx(1.0, abs=1e-3)  # stored to 4 decimals


def test_english_scores_higher_than_shuffled_letters(shipped):
    rng = np.random.default_rng(0)
    for sentence in ENGLISH:
        shuffled = "".join(rng.permutation(list(sentence)))
        assert shipped.score(sentence) > shipped.score(shuffled) + 10
    assert shipped.perplexity(ENGLISH) < shipped.perplexity(["".join(rng.permutation(list(s))) for s in ENGLISH])


def test_common_continuations(shipped):
    assert shipped.next_log_probs("th").argmax() == lm.SYMBOLS.index("e")
    assert shipped.next_log_probs("the q").argmax() == lm.SYMBOLS.index("u")
    assert shipped.next_log_probs("the end of the story")[0] > shipped.next_log_probs("the end of the")[0]  # [0]: end


def test_training_on_a_tiny_corpus_and_json_round_trip(tmp_path):
    model = lm.train(["abab", "ab", "ba ab"], order=3)
    for history in ["", "a", "ab", "b a", "zz"]:
        assert np.exp(model.next_log_probs(history)).sum() == pytest.approx(1.0)
    after_a = model.next_log_probs("a")
    assert after_a[lm.SYMBOLS.index("b")] > after_a[lm.SYMBOLS.index("a")]
    path = tmp_path / "tiny.json"
    model.save(path)
    again = lm.CharLM.from_json(__import__("json").loads(path.read_text()))
    for text in ["ab", "ba", "abba", "xyz"]:
        assert again.score(text) == pytest.approx(model.score(text), abs=1e-3)


def test_pruning_keeps_a_normalized_model():
    corpus = ENGLISH * 3 + ["an unusual sentence appears only once"]
    full, pruned = lm.train(corpus, order=5), lm.train(corpus, order=5, min_count={4: 2, 5: 2})
    assert len(pruned._table) < len(full._table)
    for history in ["an unusual sente", "the stu", ""]:
        assert np.exp(pruned.next_log_probs(history)).sum() == pytest.approx(1.0)


@pytest.mark.skipif(not (data.DATA / "speechocean762" / "test" / "text").exists(), reason="needs ../shared/data")
def test_no_test_transcript_in_training_text():
    t = lm.texts()
    train = set(t["train"])
    so_train = {u.text for u in data.speechocean("train")}
    test_only = {u.text for u in data.speechocean("test")} - so_train
    assert test_only and not (test_only & train)
    assert not ({u.text for u in data.ljspeech("test")} & (train - so_train))
    assert not (set(t["lj_heldout"]) & train)
    start = t["counts"]["ljspeech"]
    so_part = set(t["train"][start:start + t["counts"]["speechocean762_train"]])
    dev = {u.text for u in lm.dev_utterances()}
    assert len(dev) >= 100 and not (dev & so_part)


def test_shipped_model_records_how_it_was_made(shipped):
    info = shipped.info
    assert info["order"] == shipped.order and info["sentences"]["ljspeech"] > 10_000
    assert all(math.isfinite(v) and v > 1 for v in info["perplexity_per_char"].values())
