"""Transcribe audio files from the command line: the same path as the app, one line per file.

    python -m asr_core.transcribe clip.wav
    python -m asr_core.transcribe --model lstm --json a.wav b.flac
    python -m asr_core.transcribe --decoder beam clip.wav

Text output is the transcript alone for one file, or "FILE: transcript" for several (like grep).
With --json every file gives one JSON object per line: file, model, decoder, transcript,
frames (T, MFCC frames the network read), chars (L, characters after CTC decoding), seconds.
A file that cannot be decoded is reported on stderr and skipped; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import audio, models, pipeline


def beam_available() -> bool:
    """True when the CTC prefix beam search (asr_core/beam.py, with its language model) is present."""
    try:
        from . import beam  # noqa: F401
    except ImportError:
        return False
    return True


def transcribe(path: str, model: str, decoder: str = "greedy") -> dict:
    """One file -> the record printed for it. Raises AudioError (or OSError) with a readable message."""
    analysis = pipeline.analyse(audio.load(path), model)
    if decoder == "greedy":
        text = analysis.text  # best path, as the app shows it
    else:
        from . import beam
        text = beam.decode(analysis.log_probs, decoder, model)
    return {"file": path, "model": model, "decoder": decoder, "transcript": text,
            "frames": analysis.frames, "chars": len(text), "seconds": round(analysis.clip.seconds, 3)}


def main(argv=None) -> int:
    names = models.available()
    decoders = ["greedy", "beam"] if beam_available() else ["greedy"]
    p = argparse.ArgumentParser(prog="python -m asr_core.transcribe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, webm, m4a, ...)")
    p.add_argument("--model", choices=names, default=pipeline.default_model() if names else None,
                   help="acoustic model (default: the most accurate shipped one)")
    p.add_argument("--decoder", choices=decoders, default="greedy",
                   help="CTC decoder: greedy best path (default) or prefix beam search with the language model")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of plain text")
    args = p.parse_args(argv)
    if args.model is None:
        p.error(f"no models found in {models.MODELS_DIR}")

    failed = 0
    for path in args.files:
        if not os.path.isfile(path):
            failed += 1
            print(f"{path}: no such file", file=sys.stderr)
            continue
        try:
            record = transcribe(path, args.model, args.decoder)
        except (audio.AudioError, OSError) as e:
            failed += 1
            print(f"{path}: {e}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(record), flush=True)
        elif len(args.files) > 1:
            print(f"{path}: {record['transcript']}", flush=True)
        else:
            print(record["transcript"], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
