"""Do new language models help the beam search? One acoustic model, two LM directories, speechocean762 test.

    git show HEAD:assets/lm/char_lm.json > /tmp/old/char_lm.json   # likewise word_lm.json and config.json
    python scripts/compare_lms.py lstm /tmp/old assets/lm
    python scripts/compare_lms.py rnn /tmp/old/lm assets/lm --first-model /tmp/old/models/rnn.safetensors
        # the shipped model before (its weights and card, with the LM config tuned for it then) against now

Each directory holds char_lm.json, word_lm.json and config.json (the weights tuned on the dev set for each
model). The model's log-probabilities are computed once per set of weights; the prefix beam search decodes every test
utterance with each directory's LMs and that model's tuned weights; the table gives CER / WER and the
second minus the first with its 95 % interval from resampling the 100 test speakers (asr_core.compare).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from asr_core import beam, compare, evaluate  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("first", type=Path)
    p.add_argument("second", type=Path)
    p.add_argument("--first-model", help="decode the first side with these weights instead (NAME.safetensors, "
                   "its card beside it; NAME must be MODEL): a re-trained model with its re-tuned beam against the old")
    p.add_argument("--limit", type=int)
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    items, speakers = compare.speechocean_test(args.limit)
    refs = [ref for _, ref in items]
    stem, _ = compare.resolve(args.model)
    if args.first_model and compare.resolve(args.first_model)[0] != stem:
        p.error(f"--first-model must hold a {stem} model, to be decoded with {stem}'s tuned LM weights")
    feats = [f for f, _ in items]
    draws = compare.speaker_draws(speakers, args.resamples)
    counts, result, lps_of = {}, {"model": args.model, "n_utts": len(items), "decoder": "beam"}, {}
    for side, d, weights in (("first", args.first, args.first_model or args.model), ("second", args.second, args.model)):
        if weights not in lps_of:   # one forward pass per set of weights: both sides share it without --first-model
            lps_of[weights] = evaluate.log_probs(stem, feats, directory=compare.resolve(weights)[1])
        lps = lps_of[weights]
        opts = beam.settings(stem, lm_dir=d)
        hyps = [beam.beam_search(lp, **opts)[0].text for lp in lps]
        counts[side] = c = compare.edit_counts(refs, hyps)
        result[side] = {"lm_dir": str(d), "weights": weights,
                        "cer": round(float(c["char_edits"].sum() / c["chars"].sum()), 4),
                        "wer": round(float(c["word_edits"].sum() / c["words"].sum()), 4),
                        **{k: v for k, v in opts.items() if k not in ("lm", "word_lm")}}
        print(f"{side}: {result[side]}", flush=True)
    a, b = counts["first"], counts["second"]
    result["second_minus_first"] = {
        "cer": compare.paired_difference(a["char_edits"], b["char_edits"], a["chars"], draws),
        "wer": compare.paired_difference(a["word_edits"], b["word_edits"], a["words"], draws)}
    print(f"{args.second} minus {args.first}: {result['second_minus_first']} "
          f"(speechocean762 test, {len(items)} utterances, {args.model}, beam width as configured)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
