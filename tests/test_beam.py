"""CTC prefix beam search against brute force, the classic best-path-vs-best-labelling example,
torch's CTC loss, and the shipped character and word language models."""
import itertools
import json

import numpy as np
import pytest

from asr_core import beam, ctc, lm, wordlm
from asr_core.vocab import LABELS, NUM_CLASSES, encode

EXACT = {"prune_blank": 1.0, "prune_char": 0.0}  # no pruning: the search only drops what the beam cannot hold
A, B = LABELS.index("a"), LABELS.index("b")


def full_log_probs(probs: np.ndarray, classes: list[int]) -> np.ndarray:
    """(T, len(classes)) probabilities over a few classes -> (T, 29) log-probabilities (others impossible)."""
    out = np.full((probs.shape[0], NUM_CLASSES), -np.inf)
    out[:, classes] = np.log(probs)
    return out


def brute_force(probs: np.ndarray, classes: list[int]) -> dict[tuple, float]:
    """P(labelling) for every labelling: enumerate every path, collapse it, add up its probability."""
    totals: dict[tuple, float] = {}
    for path in itertools.product(range(len(classes)), repeat=probs.shape[0]):
        p = float(np.prod(probs[np.arange(len(path)), path]))
        labels = tuple(ctc.collapse([classes[k] for k in path]).labels)
        totals[labels] = totals.get(labels, 0.0) + p
    return totals


@pytest.mark.parametrize("seed", range(12))
def test_beam_search_without_lm_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    frames = 3 + seed % 2                                        # 3 or 4 frames
    classes = [0, A, B]                                          # blank, a, b
    probs = rng.dirichlet(np.full(3, 0.8), size=frames)
    truth = brute_force(probs, classes)
    hyps = beam.beam_search(full_log_probs(probs, classes), beam=64, **EXACT)
    best = max(truth, key=truth.get)
    assert hyps[0].labels == best
    assert np.exp(hyps[0].acoustic) == pytest.approx(truth[best], rel=1e-9)
    # with a beam wide enough, every possible labelling comes back with its exact probability
    assert {h.labels for h in hyps} == set(truth)
    for h in hyps:
        assert np.exp(h.acoustic) == pytest.approx(truth[h.labels], rel=1e-9)
        assert h.score == h.acoustic and h.lm == 0.0


def test_best_path_is_not_the_best_labelling():
    """Each frame: blank 0.6, a 0.4. The best path is "··" (0.36) and collapses to "",
    but "a" has three paths (a·, ·a, aa): 0.24 + 0.24 + 0.16 = 0.64."""
    log_probs = full_log_probs(np.array([[0.6, 0.4], [0.6, 0.4]]), [0, A])
    assert ctc.greedy(log_probs).text == ""
    hyps = beam.beam_search(log_probs, **EXACT)
    assert [h.text for h in hyps] == ["a", ""]
    assert np.exp(hyps[0].acoustic) == pytest.approx(0.64)
    assert np.exp(hyps[1].acoustic) == pytest.approx(0.36)
    assert np.exp(beam.labelling_log_prob(log_probs, "a")) == pytest.approx(0.64)
    assert np.exp(beam.labelling_log_prob(log_probs, "")) == pytest.approx(0.36)
    assert beam.decode(log_probs, "greedy") == ""


def random_log_probs(rng, frames: int, peak: float = 3.0) -> np.ndarray:
    logits = rng.normal(0, 1, (frames, NUM_CLASSES))
    logits[np.arange(frames), rng.integers(0, NUM_CLASSES, frames)] += peak
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def test_nbest_is_sorted_and_distinct():
    hyps = beam.beam_search(random_log_probs(np.random.default_rng(1), 60), beam=12, nbest=10)
    assert 1 < len(hyps) <= 10
    scores = [h.score for h in hyps]
    assert scores == sorted(scores, reverse=True)
    assert len({h.labels for h in hyps}) == len(hyps)


def test_acoustic_scores_agree_with_torch_ctc_loss():
    """Without pruning the search's acoustic score is the CTC probability of the labelling summed over
    ALL its alignments, i.e. -ctc_loss; with pruning it can only be lower (alignments were dropped)."""
    rng = np.random.default_rng(2)
    small = full_log_probs(rng.dirichlet(np.ones(4), size=7), [0, A, B, LABELS.index(" ")])
    for h in beam.beam_search(small, beam=400, nbest=20, **EXACT):
        assert h.acoustic == pytest.approx(beam.labelling_log_prob(small, h.labels), abs=1e-9)
    long = random_log_probs(rng, 200)
    for h in beam.beam_search(long, beam=8, nbest=5):
        assert h.acoustic <= beam.labelling_log_prob(long, h.labels) + 1e-9


def test_labelling_log_prob_needs_enough_frames():
    log_probs = full_log_probs(np.array([[0.5, 0.5], [0.5, 0.5]]), [0, A])
    assert beam.labelling_log_prob(log_probs, "aa") == -np.inf  # a·a needs three frames
    assert beam.labelling_log_prob(log_probs, [A]) == pytest.approx(np.log(0.75))


def spelled(text: str, doubt: dict[int, tuple[str, float]] | None = None) -> np.ndarray:
    """Log-probs that spell `text`: each character on 2 frames then a blank frame. doubt[i] = (other, p)
    gives character i only 1-p, and `other` p, so the acoustics alone prefer `other` when p > 0.5."""
    rows = []
    for i, ch in enumerate(text):
        row = np.full(NUM_CLASSES, 1e-4)
        if doubt and i in doubt:
            other, p = doubt[i]
            row[LABELS.index(ch)], row[LABELS.index(other)] = 1 - p, p
        else:
            row[LABELS.index(ch)] = 1.0
        rows += [row / row.sum()] * 2
        blank = np.full(NUM_CLASSES, 1e-4)
        blank[0] = 1.0
        rows.append(blank / blank.sum())
    return np.log(np.array(rows))


def test_language_model_overrules_weak_acoustic_evidence():
    language_model = lm.load()
    assert language_model is not None, "assets/lm/char_lm.json is missing: run python -m asr_core.lm"
    log_probs = spelled("the cat sat", doubt={2: ("a", 0.6), 4: ("k", 0.6)})  # acoustics hear "tha kat sat"
    assert beam.beam_search(log_probs, beam=8)[0].text == "tha kat sat"
    with_lm = beam.beam_search(log_probs, beam=8, lm=language_model, alpha=1.0, beta=1.0)
    assert with_lm[0].text == "the cat sat"
    top = with_lm[0]
    assert top.lm == pytest.approx(language_model.score("the cat sat"))
    assert top.score == pytest.approx(top.acoustic + 1.0 * top.lm + 1.0 * len(encode("the cat sat")))


def test_decode_api():
    log_probs = spelled("hello")
    assert beam.decode(log_probs, "greedy") == ctc.greedy(log_probs).text == "hello"
    assert beam.decode(log_probs, "beam") == "hello"
    with pytest.raises(ValueError):
        beam.decode(log_probs, "viterbi")
    settings = beam.settings()
    assert settings["beam"] >= 1 and settings["lm"] is lm.load()


def test_app_decoder_selector_changes_only_the_transcript(speech_wav):
    import app  # python -m pytest runs from the repository root

    from asr_core import pipeline
    model = pipeline.default_model()
    a = pipeline.transcribe_file(str(speech_wav), model)
    greedy, beamed = app.analyse(str(speech_wav), model, "greedy"), app.analyse(str(speech_wav), model, "beam")
    assert greedy[0] == a.text
    assert beamed[0] == beam.decode(a.log_probs, "beam", model)
    assert beamed[-2].text == greedy[-2].text == a.text  # the stored analysis (and its panels) stay greedy


# -- the word language model -----------------------------------------------------------------------------

# Written for these tests (not from any corpus).
TINY_TEXT = ["the house is big", "a big house", "the dog is in the house", "my house is small"]


def test_word_lm_flips_a_near_miss_to_the_vocabulary_word():
    words = wordlm.train(TINY_TEXT, order=3, min_count=1)
    for text, i in [("the house is big", 5), ("a big house", 7)]:  # inside the sentence, and its last word
        log_probs = spelled(text, doubt={i: ("a", 0.6)})              # acoustics hear "hause"
        near_miss = text.replace("house", "hause")
        assert beam.beam_search(log_probs, beam=8)[0].text == near_miss
        top = beam.beam_search(log_probs, beam=8, word_lm=words, gamma=1.0, oov=-5.0)[0]
        assert top.text == text
        assert top.word == pytest.approx(words.score(text))          # every word known: no oov
        assert top.score == pytest.approx(top.acoustic + 1.0 * top.word)
        # with a weak weight and a mild penalty the acoustics win again
        assert beam.beam_search(log_probs, beam=8, word_lm=words, gamma=0.05, oov=-0.5)[0].text == near_miss


def test_unknown_words_are_penalized_but_possible():
    words = wordlm.train(TINY_TEXT, order=3, min_count=1)
    log_probs = spelled("the zorb is big")                            # clear acoustics, unknown word
    hyps = beam.beam_search(log_probs, beam=8, nbest=8, word_lm=words, gamma=1.0, oov=-4.0)
    assert hyps[0].text == "the zorb is big"
    for h in hyps:  # each unknown word costs P(<unk> | history) and oov, once
        unknown = sum(w not in words for w in h.text.split())
        assert h.word == pytest.approx(words.score(h.text) - 4.0 * unknown)
        assert h.score == pytest.approx(h.acoustic + h.word)


def test_word_scores_of_the_shipped_model_on_a_real_clip(speech_wav):
    from asr_core import pipeline
    a = pipeline.transcribe_file(str(speech_wav), pipeline.default_model())
    words, oov = wordlm.load(), -3.0
    hyps = beam.beam_search(a.log_probs, beam=8, nbest=8, word_lm=words, gamma=0.3, oov=oov)
    for h in hyps:  # the search's running word score equals scoring the finished text afresh
        unknown = sum(w not in words for w in h.text.split())
        assert h.word == pytest.approx(words.score(h.text) + oov * unknown, abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_gamma_zero_is_exactly_the_character_lm_search(seed):
    log_probs = random_log_probs(np.random.default_rng(seed), 150, peak=4.0)
    old = beam.beam_search(log_probs, beam=8, nbest=8, lm=lm.load(), alpha=0.6, beta=1.5)
    new = beam.beam_search(log_probs, beam=8, nbest=8, lm=lm.load(), alpha=0.6, beta=1.5,
                           word_lm=wordlm.load(), gamma=0.0, oov=-3.0)
    assert [(h.labels, h.score, h.acoustic, h.lm) for h in new] == [(h.labels, h.score, h.acoustic, h.lm) for h in old]
    assert any(h.word != 0.0 for h in new)  # the word model was consulted, with no weight


def test_settings_are_loaded_per_model(tmp_path, monkeypatch):
    config = {"alpha": 0.5, "beta": 1.0, "gamma": 0.25, "oov": -4.0, "beam": 12,
              "models": {"m1": {"alpha": 0.3, "beta": 2.0, "gamma": 0.7, "oov": -2.0, "dev": {}},
                         "m2": {"alpha": 0.9, "beta": 0.5, "gamma": 0.0, "oov": -6.0}}}
    monkeypatch.setattr(lm, "CONFIG_FILE", tmp_path / "config.json")
    (tmp_path / "config.json").write_text(json.dumps(config))
    m1, m2, untuned = beam.settings("m1"), beam.settings("m2"), beam.settings("other")
    assert (m1["alpha"], m1["beta"], m1["gamma"], m1["oov"], m1["beam"]) == (0.3, 2.0, 0.7, -2.0, 12)
    assert (m2["alpha"], m2["beta"], m2["gamma"], m2["oov"]) == (0.9, 0.5, 0.0, -6.0)
    assert (untuned["alpha"], untuned["beta"], untuned["gamma"], untuned["oov"]) == (0.5, 1.0, 0.25, -4.0)
    assert m1["lm"] is lm.load() and m1["word_lm"] is wordlm.load()
    assert m2["word_lm"] is None  # a word LM with no weight is not consulted (it would only cost time)
    beam.beam_search(spelled("hello"), **m1)  # every key is a beam_search argument


def test_shipped_config_tunes_the_word_lm_for_each_model():
    from asr_core import models
    cfg = lm.config()
    for name in models.available():
        tuned = cfg["models"].get(name)
        if tuned is not None:
            assert {"alpha", "beta", "gamma", "oov"} <= set(tuned) and tuned["gamma"] >= 0 and tuned["oov"] <= 0
