"""How well a shipped model hears held-out speech: CER and WER per corpus and split, greedy vs beam search.

    python -m asr_core.evaluate --model lstm                      # every held-out set, both decoders
    python -m asr_core.evaluate --model gru --decoder greedy --limit 200
    python -m asr_core.evaluate --model lstm --write-card         # record in assets/models/lstm.json
    python -m asr_core.evaluate --model lstm --tune               # choose the LM weights on the dev set
    python -m asr_core.evaluate --model lstm --tune --dev-augment 7   # ... on dev clips augmented once (seed 7)
    python -m asr_core.evaluate --model lstm --tune --fresh       # ... the best found, even if not clearly better

Only held-out data is scored (see HELD_OUT for who was heard in training). The MFCC caches of
`python -m asr_core.data` are used when present, otherwise features are computed from the audio.
The beam search's alpha (character LM weight), beta (bonus per character), gamma (word LM weight) and
oov (log-probability of an unknown word's spelling) are tuned with --tune on a DEV set, speechocean762
*train* utterances of the speakers in asr_core.lm.dev_speakers() (whose sentences neither LM saw), never
on a test set; the choice is stored in assets/lm/config.json. A model's standing setting changes only when the
best one found is clearly better on dev (a paired bootstrap over the dev speakers; --fresh ignores it).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import jiwer
import numpy as np
import torch

from . import audio, augment, beam, ctc, data, features, lm, models, synth, wordlm
from .vocab import decode as decode_ids

HELD_OUT = {  # corpus -> (split, who is in it)
    "speechocean762": ("test", "100 speakers, none heard in training (non-native; adults and children)"),
    "ljspeech": ("test", "seen speaker: LJ Speech's single speaker is also in training (every 5th clip held out)"),
    "fsdd": ("test", "seen speakers: all 6 also in training (the dataset's own split, recordings 0-4)"),
    "synth": ("test", "held-out synthesized voices, never trained on: " + ", ".join(sorted(synth.HELD_OUT_VOICES))),
}
TUNE_ALPHAS = [0.0, 0.3, 0.6, 1.0]
TUNE_BETAS = [0.0, 0.5, 1.0, 2.0, 3.0]
TUNE_GAMMAS = [0.1, 0.2, 0.3, 0.5, 0.7]
TUNE_OOVS = [-1.5, -3.0, -6.0]


def error_rates(refs: list[str], hyps: list[str]) -> dict:
    """Corpus-level character and word error rates (edit distance / reference length, via jiwer)."""
    return {"cer": round(float(jiwer.cer(refs, hyps)), 4), "wer": round(float(jiwer.wer(refs, hyps)), 4)}


def spread(items: list, limit: int | None) -> list:
    """At most `limit` items, evenly spread (so a limit still covers many speakers)."""
    if not limit or limit >= len(items):
        return items
    return items[::len(items) // limit][:limit]


def audio_samples(utts: list[data.Utterance], augment_seed: int | None = None) -> list[tuple[torch.Tensor, str]]:
    """(MFCC frames, reference text) for each readable utterance with a non-empty transcript; with
    `augment_seed`, each clip first goes through one draw of the training augmentation (reproducible)."""
    out = []
    rng = np.random.default_rng(augment_seed) if augment_seed is not None else None
    for u in utts:
        if not u.text:
            continue
        try:
            samples = audio.load(u.path).samples
        except audio.AudioError:
            continue
        out.append((features.mfcc(augment.random_augment(samples, rng) if rng is not None else samples), u.text))
    return out


def samples(corpus: str, split: str, limit: int | None = None) -> list[tuple[torch.Tensor, str]]:
    cache = data.FEATURES / f"{corpus}-{split}-x0.safetensors"
    if cache.exists():
        items = spread(data.FeatureSet(cache).items, limit)
        return [(f.float(), decode_ids(l.tolist())) for f, l in items]
    return audio_samples(spread(data.CORPORA[corpus](split), limit))


@torch.inference_mode()
def log_probs(model_name: str, feats: list[torch.Tensor], batch_frames: int = 30_000,
              directory: Path = models.MODELS_DIR) -> list[np.ndarray]:
    """Run the model over many utterances, in batches of similar length (padding never enters the RNN)."""
    model = models.load(model_name, directory)
    order = sorted(range(len(feats)), key=lambda i: feats[i].shape[0])
    out: list[np.ndarray | None] = [None] * len(feats)
    start = 0
    while start < len(order):
        longest, end = 0, start
        while end < len(order) and max(longest, feats[order[end]].shape[0]) * (end - start + 1) <= batch_frames:
            longest = max(longest, feats[order[end]].shape[0])
            end += 1
        end = max(end, start + 1)
        batch = [feats[i] for i in order[start:end]]
        lengths = torch.tensor([f.shape[0] for f in batch])
        x = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True)
        y = model(x, lengths).log_softmax(-1).numpy()
        for j, i in enumerate(order[start:end]):
            out[i] = y[j, :lengths[j]]
        start = end
    return out


def by_group(refs: list[str], hyps: list[str], groups: list[str]) -> dict:
    """Error rates of the utterances of each group (e.g. speakers' age groups), in order of first appearance."""
    out = {}
    for g in dict.fromkeys(groups):
        idx = [i for i, x in enumerate(groups) if x == g]
        out[g] = {"n_utts": len(idx), **error_rates([refs[i] for i in idx], [hyps[i] for i in idx])}
    return out


def age_breakdown(split: str, refs: list[str], hyps: dict, limit: int | None = None) -> dict:
    """speechocean762 results per speaker age group (its spk2age: children, teenagers, adults), per decoder.
    The scored items are the corpus's utterances in order (thinned by `limit` the same way); checked
    transcript by transcript, and left out ({}) where they are not (e.g. a cache that skipped a clip)."""
    utts = spread([u for u in data.speechocean(split) if u.text], limit)
    if [u.text for u in utts] != refs:
        print("speechocean762: scored items do not follow the corpus one to one; no age breakdown", flush=True)
        return {}
    ages = data.age_groups(data.DATA / "speechocean762" / split / "spk2age")
    groups = [ages[u.speaker] for u in utts]
    order = [name for name, _, _ in data.AGE_GROUPS]
    return {dec: dict(sorted(by_group(refs, h, groups).items(), key=lambda kv: order.index(kv[0])))
            for dec, h in hyps.items()}


def score(model_name: str, items: list[tuple[torch.Tensor, str]], decoders=("greedy", "beam")) -> tuple[dict, dict]:
    """Metrics and hypotheses of one model on (features, reference) pairs, for each decoder."""
    refs = [ref for _, ref in items]
    lps = log_probs(model_name, [f for f, _ in items])
    metrics, hyps = {"n_utts": len(items)}, {}
    for decoder in decoders:
        if decoder == "greedy":
            hyps[decoder] = [ctc.greedy(lp).text for lp in lps]
            metrics[decoder] = error_rates(refs, hyps[decoder])
        else:
            opts = beam.settings(model_name)
            hyps[decoder] = [beam.beam_search(lp, **opts)[0].text for lp in lps]
            used = lambda model, weight, path: path.name if model is not None and weight else None
            metrics[decoder] = {**error_rates(refs, hyps[decoder]), "beam": opts["beam"], "alpha": opts["alpha"],
                                "beta": opts["beta"], "lm": used(opts["lm"], opts["alpha"], lm.LM_FILE),
                                "gamma": opts["gamma"], "oov": opts["oov"],
                                "word_lm": used(opts["word_lm"], opts["gamma"], wordlm.WORD_LM_FILE)}
    return metrics, hyps


def evaluate(model_name: str, corpora=tuple(HELD_OUT), decoders=("greedy", "beam"), limit: int | None = None) -> dict:
    results = {}
    for corpus in corpora:
        split, who = HELD_OUT[corpus]
        items = samples(corpus, split, limit)
        if not items:
            print(f"{corpus}/{split}: no data found, skipped", flush=True)
            continue
        if corpus == "synth" and "beam" in decoders:
            _check_lm_excludes_synth_test()
        t0 = time.time()
        metrics, hyps = score(model_name, items, decoders)
        results[corpus] = {"split": split, "speakers": who, **metrics}
        if corpus == "speechocean762":
            results[corpus]["by_age"] = age_breakdown(split, [ref for _, ref in items], hyps, limit)
        print(f"{corpus}/{split}: {len(items)} utterances in {time.time() - t0:.0f} s", flush=True)
    return results


def _check_lm_excludes_synth_test() -> None:
    """The LM leaves out the held-out voices' sentences that existed when it was built; say so if more exist now."""
    language_model = lm.load()
    built = (language_model.info.get("sentences", {}) if language_model else {}).get("synth_test_sentences_excluded")
    now = len({u.text for u in data.synthesized("test")})
    if language_model is not None and built is not None and now > built:
        print(f"warning: the LM was built when {built} held-out synthesized sentences existed, now {now}; "
              "rebuild it (python -m asr_core.lm) before trusting beam results on synth", flush=True)


def table(model_name: str, results: dict) -> str:
    lines = [f"model {model_name}: CER / WER on held-out data",
             f"{'corpus':16}{'split':7}{'utts':>6}  {'greedy CER':>10}{'WER':>7}  {'beam CER':>9}{'WER':>7}  speakers"]
    for corpus, r in results.items():
        g, b = r.get("greedy", {}), r.get("beam", {})
        cell = lambda m, k, w: f"{m[k]:>{w}.3f}" if k in m else " " * (w - 1) + "-"
        lines.append(f"{corpus:16}{r['split']:7}{r['n_utts']:>6}  {cell(g, 'cer', 10)}{cell(g, 'wer', 7)}  "
                     f"{cell(b, 'cer', 9)}{cell(b, 'wer', 7)}  {r['speakers']}")
        for group, g in r.get("by_age", {}).get("greedy", {}).items():
            b = r["by_age"].get("beam", {}).get(group, {})
            lines.append(f"{'  ' + group:23}{g['n_utts']:>6}  {cell(g, 'cer', 10)}{cell(g, 'wer', 7)}  "
                         f"{cell(b, 'cer', 9)}{cell(b, 'wer', 7)}")
    if any("beam" in r for r in results.values()):
        b = next(r["beam"] for r in results.values() if "beam" in r)
        tuned = model_name in lm.config().get("models", {})
        lines.append(f"beam: width {b['beam']}, LM {b['lm']}, alpha {b['alpha']}, beta {b['beta']}, "
                     f"word LM {b.get('word_lm')}, gamma {b.get('gamma', 0.0)}, oov {b.get('oov')} "
                     + ("(tuned on the dev set, never on test)" if tuned else "(defaults: not tuned for this model yet)"))
    return "\n".join(lines)


def write_card(model_name: str, results: dict, directory: Path = models.MODELS_DIR) -> Path:
    """Read-modify-write assets/models/NAME.json: "metrics" per corpus and the greedy speechocean762 headline."""
    path = directory / f"{model_name}.json"
    card = json.loads(path.read_text())
    card["metrics"] = {**card.get("metrics", {}), **results}
    so = results["speechocean762"]["greedy"]
    card["headline"] = {"cer": so["cer"], "wer": so["wer"], "dataset": "speechocean762", "split": "test",
                        "decoder": "greedy"}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def clear_gain(refs: list[str], standing: list[str], found: list[str], speakers: list[str],
               resamples: int = 2000) -> dict:
    """Is `found` better than `standing` on these clips, beyond the luck of which speakers they came from? The
    difference in CER + WER (found minus standing) with its 95 % interval from a paired bootstrap over the
    speakers (asr_core.compare's), and `clear`: the whole interval below zero."""
    from . import compare  # compare builds on this module
    a, b = compare.edit_counts(refs, standing), compare.edit_counts(refs, found)
    draws = compare.speaker_draws(speakers, resamples)
    cer, cer_draws = compare.resampled_differences(a["char_edits"], b["char_edits"], a["chars"], draws)
    wer, wer_draws = compare.resampled_differences(a["word_edits"], b["word_edits"], a["words"], draws)
    out = compare.interval(cer + wer, cer_draws + wer_draws)
    return {**out, "clear": out["high"] < 0}


def tune(model_name: str, limit: int | None = None, width: int = 8, augment_seed: int | None = None,
         fresh: bool = False) -> dict:
    """Choose the beam's weights for `model_name` on the dev set (lowest CER + WER) and store them in
    assets/lm/config.json. First alpha x beta with the character LM alone; then, with the word LM, coordinate
    descent from there: gamma x oov at the best alpha and beta, alpha x beta again at the word LM's best gamma
    and oov (each word's log-probability is a cost per word, so it moves the best insertion bonus beta; also
    when the word LM did not yet beat the character LM alone), and again, until the best setting with the
    word LM no longer moves; the best of everything tried is the setting found.
    A model that already has a setting keeps it unless the best found is clearly better on dev (clear_gain: the
    interval of the difference in CER + WER over the dev speakers entirely below zero), so that the choice does
    not swing back and forth on a small dev set's noise; fresh=True takes the best found whatever stood before."""
    language_model, word_model = lm.load(), wordlm.load()
    if language_model is None:
        raise SystemExit("no language model: run python -m asr_core.lm first")
    standing = None if fresh else lm.config().get("models", {}).get(model_name)
    utts = spread(lm.dev_utterances(), limit)
    items = audio_samples(utts, augment_seed)
    refs = [ref for _, ref in items]
    lps = log_probs(model_name, [f for f, _ in items])
    greedy = error_rates(refs, [ctc.greedy(lp).text for lp in lps])
    tried: dict[tuple, dict] = {}
    hyps_of: dict[tuple, list[str]] = {}

    def run(alpha, beta, gamma=0.0, oov=None):
        key = (alpha, beta, gamma, oov if gamma else None)
        if key not in tried:
            hyps = [beam.beam_search(lp, beam=width, lm=language_model, alpha=alpha, beta=beta,
                                     word_lm=word_model if gamma else None, gamma=gamma, oov=oov or 0.0)[0].text
                    for lp in lps]
            tried[key], hyps_of[key] = error_rates(refs, hyps), hyps
            print(f"alpha {alpha:<4} beta {beta:<4} gamma {gamma:<4} oov {key[3]!s:<5} "
                  f"CER {tried[key]['cer']:.4f} WER {tried[key]['wer']:.4f}", flush=True)

    score = lambda k: tried[k]["cer"] + tried[k]["wer"]  # both rates count
    best = lambda: min(tried, key=score)
    for alpha, beta in itertools.product(TUNE_ALPHAS, TUNE_BETAS):
        run(alpha, beta)
    char_only = best()
    if word_model is not None and TUNE_GAMMAS and TUNE_OOVS:  # else no word-LM setting to try
        with_words = lambda: min((k for k in tried if k[2]), key=score)  # ties keep the earlier: it only moves forward
        alpha, beta = char_only[:2]
        while True:  # coordinate descent: each pair of weights at the other's best, until the best stays put
            for gamma, oov in itertools.product(TUNE_GAMMAS, TUNE_OOVS):
                run(alpha, beta, gamma, oov)
            _, _, gamma, oov = with_words()
            for a, b in itertools.product(TUNE_ALPHAS, TUNE_BETAS):
                run(a, b, gamma, oov)
            if with_words()[:2] == (alpha, beta):  # best where gamma x oov was just searched: both steps agree
                break
            alpha, beta = with_words()[:2]
    found = chosen = best()
    switch = None
    if standing is not None:
        gamma = standing.get("gamma", 0.0)
        keep = (standing["alpha"], standing["beta"], gamma, standing.get("oov") if gamma else None)
        run(*keep)
        if keep != found:
            switch = clear_gain(refs, hyps_of[keep], hyps_of[found], [u.speaker for u in utts])
            chosen = found if switch["clear"] else keep
            print(f"best found vs standing setting on dev: d(CER + WER) {switch['diff']:+.4f} "
                  f"[{switch['low']:+.4f}, {switch['high']:+.4f}] -> "
                  + ("switch" if switch["clear"] else "keep the standing setting"), flush=True)
    alpha, beta, gamma, oov = chosen
    if oov is None:  # gamma 0: oov plays no part; keep the standing one, else the default
        oov = (standing or {}).get("oov", lm.config().get("oov", -3.0))
    cfg = lm.config()
    cfg.setdefault("models", {})
    cfg["models"][model_name] = {"alpha": alpha, "beta": beta, "gamma": gamma, "oov": oov, "dev": {
        "set": f"speechocean762 train, speakers {', '.join(lm.dev_speakers())} (sentences not in the LMs; "
               "their audio may be in the acoustic model's training)"
               + (f"; each clip augmented once (asr_core.augment.random_augment, seed {augment_seed})"
                  if augment_seed is not None else ""),
        "augment_seed": augment_seed,
        "n_utts": len(items), "greedy": greedy, "beam": {**tried[chosen], "beam": width},
        "beam_char_lm_only": {**tried[char_only], "beam": width, "alpha": char_only[0], "beta": char_only[1]},
        "best_found": {**dict(zip(("alpha", "beta", "gamma", "oov"), found)), **tried[found]},
        "standing": standing and {k: standing.get(k) for k in ("alpha", "beta", "gamma", "oov")},
        "vs_standing": switch and {**switch, "rule": "switch only when the 95 % interval of d(CER + WER), best "
                                   "found minus standing, over the dev speakers lies entirely below zero"}}}
    cfg.update(alpha=alpha, beta=beta, gamma=gamma, oov=oov)  # the latest tuning is the default for untuned models
    lm.CONFIG_FILE.write_text(json.dumps(cfg, indent=2) + "\n")
    print(f"{model_name}: alpha {alpha}, beta {beta}, gamma {gamma}, oov {oov}; dev CER / WER greedy "
          f"{greedy['cer']:.4f} / {greedy['wer']:.4f} -> beam, character LM {tried[char_only]['cer']:.4f} / "
          f"{tried[char_only]['wer']:.4f} -> chosen {tried[chosen]['cer']:.4f} / {tried[chosen]['wer']:.4f}"
          f" ({len(items)} utterances) -> {lm.CONFIG_FILE}")
    return cfg


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m asr_core.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, choices=models.available())
    p.add_argument("--decoder", nargs="+", choices=beam.DECODERS, default=list(beam.DECODERS))
    p.add_argument("--corpus", nargs="+", choices=list(HELD_OUT), default=list(HELD_OUT))
    p.add_argument("--limit", type=int, help="at most N utterances per corpus (evenly spread)")
    p.add_argument("--write-card", action="store_true", help="store the metrics in assets/models/MODEL.json")
    p.add_argument("--tune", action="store_true",
                   help="choose alpha/beta/gamma/oov on the dev set (never on test) and stop")
    p.add_argument("--fresh", action="store_true",
                   help="with --tune: take the best setting found even where it is not clearly better on dev "
                        "than the model's standing one")
    p.add_argument("--dev-augment", type=int, metavar="SEED",
                   help="with --tune: pass each dev clip through one draw of the training augmentation (this "
                        "seed), so that a model that has heard the dev speakers is as unsure as on new ones")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.tune:
        tune(args.model, args.limit, augment_seed=args.dev_augment, fresh=args.fresh)
        return
    if args.write_card and (args.limit or "greedy" not in args.decoder or "speechocean762" not in args.corpus):
        p.error("--write-card needs the full test sets (no --limit), the greedy decoder and speechocean762")
    results = evaluate(args.model, args.corpus, args.decoder, args.limit)
    print(table(args.model, results))
    if args.write_card:
        print(f"wrote {write_card(args.model, results)}")


if __name__ == "__main__":
    main()
