"""The character and word n-gram language models: proper distributions, English over noise, no test text."""
import json
import math

import numpy as np
import pytest

from asr_core import data, lm, lmtext, wordlm

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


def _backoff(table, h):
    """P(. | h) straight from the backoff form, written out recursively (what the decoding array holds)."""
    if h not in table:
        return _backoff(table, h[1:])
    bow, nxt = table[h]
    out = _backoff(table, h[1:]) + bow if h else np.full(len(lm.SYMBOLS), -math.log(len(lm.SYMBOLS)))
    out[[lm.SYMBOLS.index(s) for s in nxt]] = list(nxt.values())
    return out


def test_decoding_rows_are_the_backoff_distributions(tmp_path):
    corpus = ENGLISH * 3 + ["an unusual sentence appears only once", "zebras quietly jog"]
    model = lm.train(corpus, order=5, min_count={4: 2, 5: 2})
    model.save(tmp_path / "lm.json")
    loaded = lm.CharLM.from_json(json.loads((tmp_path / "lm.json").read_text()))
    for history in ["", "t", "the stu", "an unusual sente", "zq", "xx zebras qu", "please write your na"]:
        h = (lm.BOS + history)[-(model.order - 1):]
        expected = _backoff(model._table, h)
        assert np.array_equal(model.next_log_probs(history), expected)
        assert np.allclose(loaded.next_log_probs(history), expected, atol=1e-3)  # stored to 4 decimals


def test_decoding_grows_no_cache_and_cannot_change_the_model(shipped):
    sizes = lambda: {k: len(v) for k, v in vars(shipped).items() if hasattr(v, "__len__")}
    before = sizes()
    rng = np.random.default_rng(1)
    for sentence in ENGLISH + ["".join(rng.permutation(list(s))) for s in ENGLISH]:
        shipped.score(sentence)
    assert sizes() == before
    with pytest.raises(ValueError):
        shipped.next_log_probs("the")[0] = 0.0
    with pytest.raises(ValueError, match="loaded model"):
        shipped.to_json()


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
    assert len(dev) >= 100 and not (dev & so_part) and not (dev & train)  # nor in the Debian text
    assert t["counts"]["wordnet_examples"] > 30_000 and t["counts"]["fortunes"] > 10_000
    # the in-domain transcripts count IN_DOMAIN_COPIES times: each appears that often in the training text
    one = t["train"][start]
    assert t["train"].count(one) >= lm.IN_DOMAIN_COPIES and one in {u.text for u in data.speechocean("train")}


def test_shipped_model_records_how_it_was_made(shipped):
    info = shipped.info
    assert info["order"] == shipped.order and info["sentences"]["ljspeech"] > 10_000
    assert all(math.isfinite(v) and v > 1 for v in info["perplexity_per_char"].values())


# -- the word model (asr_core.wordlm) -------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped_words():
    model = wordlm.load()
    assert model is not None, "assets/lm/word_lm.json is missing: run python -m asr_core.wordlm"
    return model


@pytest.mark.parametrize("history", [[], ["the"], ["i", "want"], ["zzqx", "blorp"], ["of", "the"], ["the"] * 9])
def test_word_distribution_sums_to_one_over_vocabulary_unknown_and_end(shipped_words, history):
    logp = shipped_words.next_log_probs(history)
    assert logp.shape == (len(shipped_words.words),)          # </s>, <unk> and every vocabulary word
    p = np.exp(logp)
    assert (p > 0).all() and p.sum() == pytest.approx(1.0, abs=1e-3)  # stored to 4 decimals
    for word in ["the", "house", "</s>", "qqxz"]:                  # the one-word lookup agrees with the row
        idx = shipped_words.ids.get(word, wordlm.UNK_ID)
        assert shipped_words.log_prob(word, history) == pytest.approx(logp[idx], abs=1e-9)


def test_word_model_prefers_english_word_order(shipped_words):
    for sentence in ENGLISH:
        words = sentence.split()
        shuffled = " ".join(np.random.default_rng(0).permutation(words)[::-1])
        assert shipped_words.score(sentence) > shipped_words.score(shuffled)
    assert "house" in shipped_words and "hause" not in shipped_words
    # every unknown word shares the probability of <unk> (the beam adds its oov penalty on top)
    assert shipped_words.log_prob("hause", ["the"]) == shipped_words.log_prob("<unk>", ["the"])
    assert shipped_words.continuations("hous") is not None and shipped_words.continuations("hausx") is None


def test_word_model_on_a_tiny_corpus_and_json_round_trip(tmp_path):
    corpus = ["the cat sat", "the cat ran", "a dog sat", "the dog ran home", "a cat", "zebra"]
    model = wordlm.train(corpus, order=3, min_count=2)
    assert "zebra" not in model and "home" not in model and "cat" in model  # seen once: <unk>
    for history in [[], ["the"], ["the", "cat"], ["zebra"], ["a", "a", "a"]]:
        assert np.exp(model.next_log_probs(history)).sum() == pytest.approx(1.0, abs=1e-9)
    assert model.log_prob("cat", ["the"]) > model.log_prob("dog", ["the"])   # seen twice vs once after "the"
    assert model.log_prob("zebra", []) == model.log_prob("home", []) == model.log_prob("<unk>", [])
    assert model.continuations("ca") == "t" and model.continuations("cat") == ""
    pruned = wordlm.train(corpus, order=3, min_count=1, prune={3: 2})
    assert len(pruned._table) < len(wordlm.train(corpus, order=3, min_count=1)._table)
    assert np.exp(pruned.next_log_probs(["the", "dog"])).sum() == pytest.approx(1.0, abs=1e-9)
    path = tmp_path / "words.json"
    model.save(path)
    again = wordlm.WordLM.from_json(json.loads(path.read_text()))
    for text in ["the cat sat", "a dog", "zebra zebra", "the unseen words"]:
        assert again.score(text) == pytest.approx(model.score(text), abs=1e-3)


def test_shipped_word_model_records_how_it_was_made(shipped_words):
    info = shipped_words.info
    assert info["order"] == shipped_words.order and info["sentences"]["ljspeech"] > 10_000
    for measured in info["measured"].values():
        assert math.isfinite(measured["perplexity_per_word"]) and measured["perplexity_per_word"] > 1
        assert 0 < measured["oov_rate"] < 0.2
    assert wordlm.WORD_LM_FILE.stat().st_size < 8e6  # 23k words since the Debian text joined (was 8k)


# -- the extra everyday English (asr_core.lmtext) ---------------------------------------------------------

def test_wordnet_examples_are_the_quoted_sentences_of_glosses(tmp_path):
    (tmp_path / "data.verb").write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by  \n"
        '00001740 29 v 01 breathe 0 001 | draw air into, and expel out of, the lungs; "I can breathe better now"; '
        '"The patient is breathing"  \n'
        '00002000 29 v 01 run 0 001 | move fast; "Run, Forrest!"; "She ran 3 miles to the old barn"  \n')
    # every quoted example of 3 or more words, normalized; "Run, Forrest!" is too short, the license no gloss
    assert lmtext.wordnet_examples(tmp_path) == ["i can breathe better now", "she ran three miles to the old barn",
                                                 "the patient is breathing"]


def test_fortune_sentences_split_entries_and_drop_attributions(tmp_path):
    (tmp_path / "wisdom").write_text("Look before you leap. He who hesitates is lost!\n\t\t-- Proverbs\n%\n"
                                     "Too short.\n%\nA third saying, on two\nlines.\n")
    (tmp_path / "wisdom.dat").write_bytes(b"\x00\x01")      # the index files are skipped
    (tmp_path / "perl").write_text("print the first line of the file\n")  # a skipped topic
    assert lmtext.fortune_sentences(tmp_path) == ["a third saying on two lines", "he who hesitates is lost",
                                                  "look before you leap"]


def test_missing_debian_text_names_the_package(tmp_path):
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        lmtext.wordnet_examples(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        lmtext.fortune_sentences(tmp_path / "absent")
