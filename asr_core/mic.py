"""Transcribe the local microphone from a terminal.

    python -m asr_core.mic --list-devices
    python -m asr_core.mic                    # record until Enter, then print the transcript
    python -m asr_core.mic --seconds 5 --device 2 --model lstm
    python -m asr_core.mic --stream           # partial transcripts while you speak (causal model)
    python -m asr_core.mic --seconds 3 --save take.wav   # keep the recording too

While recording, a level meter and the elapsed time are drawn on stderr; the transcript goes to
stdout. Audio is captured with PortAudio (the sounddevice package). Without the PortAudio library,
or without an input device, the command says so and exits with status 2; a recording that cannot
be transcribed (silent, too short) exits with status 1.
"""
from __future__ import annotations

import argparse
import queue
import sys
import threading
import time

import numpy as np

# asr_core.audio/models/pipeline import torch, which takes seconds: they are imported in main() only
# once a device has been found, so --list-devices and the error paths answer at once.

METER_WIDTH = 30
METER_FLOOR_DB = -60.0
BLOCK_SECONDS = 0.1


def fail(message: str, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


def import_sounddevice():
    """The sounddevice module, or None when it or the PortAudio library is missing."""
    try:
        import sounddevice
        return sounddevice
    except (ImportError, OSError):
        return None


def input_devices(sd) -> list[tuple[int, dict]]:
    return [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]


def pick_device(sd, wanted: str | None) -> tuple[int, dict] | None:
    """The input device named/numbered `wanted`, or the default input device; None if there is none."""
    devices = input_devices(sd)
    if wanted is None:
        default = sd.default.device[0]
        if default is not None and default >= 0:
            return next(((i, d) for i, d in devices if i == default), None)
        return devices[0] if devices else None
    if wanted.isdigit():
        return next(((i, d) for i, d in devices if i == int(wanted)), None)
    return next(((i, d) for i, d in devices if wanted.lower() in d["name"].lower()), None)


def meter(level_db: float, elapsed: float, total: float | None, partial: str = "") -> str:
    filled = int(round(METER_WIDTH * (max(level_db, METER_FLOOR_DB) - METER_FLOOR_DB) / -METER_FLOOR_DB))
    bar = "#" * filled + "-" * (METER_WIDTH - filled)
    when = f"{elapsed:5.1f} s" + (f" / {total:g} s" if total else "  (Enter to stop)")
    line = f"\r[{bar}] {level_db:6.1f} dBFS  {when}"
    if partial:
        line += "  " + partial[-40:]
    return line + "\x1b[K"  # clear the rest of the terminal line


def supported_rate(sd, device: int, info: dict, preferred: int) -> int:
    """The preferred rate (the model's 16 kHz: no resampling) if the device takes it, else its default rate."""
    try:
        sd.check_input_settings(device=device, samplerate=preferred, channels=1, dtype="float32")
        return preferred
    except Exception:
        return int(info["default_samplerate"])


def record(sd, device: int, rate: int, seconds: float | None, max_seconds: float, stream=None,
           out=sys.stderr) -> np.ndarray:
    """Capture mono float32 audio until `seconds` (at most max_seconds) have passed or Enter is pressed;
    draw the meter."""
    blocks: queue.Queue = queue.Queue()
    stop = threading.Event()
    if seconds is None:
        threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    limit = int(min(seconds or max_seconds, max_seconds) * rate)
    captured, problems = [0], set()

    def callback(indata, frames, time_info, status):  # PortAudio's thread: copy the block, nothing more
        if status:
            problems.add(str(status))
        blocks.put(indata[:, 0].copy())
        captured[0] += frames
        if captured[0] >= limit or stop.is_set():
            raise sd.CallbackStop

    got, n = [], 0
    with sd.InputStream(device=device, channels=1, samplerate=rate, dtype="float32",
                        blocksize=int(rate * BLOCK_SECONDS), callback=callback) as input_stream:
        while input_stream.active or not blocks.empty():
            try:
                block = blocks.get(timeout=0.5)
            except queue.Empty:
                continue
            got.append(block)
            n += len(block)
            if stream is not None:
                stream.push(block, rate)
            rms = float(np.sqrt(np.mean(block.astype(np.float64) ** 2))) if len(block) else 0.0
            out.write(meter(20 * np.log10(max(rms, 1e-9)), n / rate, seconds,
                            stream.text if stream is not None else ""))
            out.flush()
    out.write("\n")
    if problems:
        out.write(f"warning: the audio device reported: {', '.join(sorted(problems))} (some audio may be lost)\n")
    samples = np.concatenate(got) if got else np.zeros(0, np.float32)
    return samples[:limit]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument("--device", help="input device number or (part of its) name; default: the system default")
    p.add_argument("--seconds", type=float, help="record this long (default: until Enter is pressed)")
    p.add_argument("--model", help="model name (default: the best shipped model; with --stream: gru)")
    p.add_argument("--save", metavar="WAV", help="also write the recording to this WAV file")
    p.add_argument("--stream", action="store_true",
                   help="show partial transcripts while recording (needs a causal model: rnn or gru)")
    args = p.parse_args(argv)

    sd = import_sounddevice()
    if sd is None:
        return fail("PortAudio is not available (the sounddevice package or the libportaudio2 library is "
                    "missing), so the microphone cannot be opened. On Debian/Ubuntu: apt install libportaudio2.", 2)
    if args.list_devices:
        devices = input_devices(sd)
        if not devices:
            return fail("no audio input device found.", 2)
        for i, d in devices:
            print(f"{i:3d}  {d['name']}  ({d['max_input_channels']} ch, {d['default_samplerate']:g} Hz)")
        return 0
    chosen = pick_device(sd, args.device)
    if chosen is None:
        what = f"no input device matches {args.device!r}" if args.device else "no audio input device found"
        return fail(f"{what}. See `python -m asr_core.mic --list-devices`.", 2)
    from . import audio, models, pipeline
    if args.seconds is not None and not 0 < args.seconds <= audio.MAX_SECONDS:
        return fail(f"--seconds must be between 0 and {audio.MAX_SECONDS}.", 2)
    device, info = chosen

    model_name = args.model or ("gru" if args.stream else pipeline.default_model())
    if model_name not in models.available():
        return fail(f"unknown model {model_name!r}; shipped: {', '.join(models.available())}", 2)
    stream = None
    if args.stream:
        from .streaming import Stream
        try:
            stream = Stream(model_name)
        except ValueError as e:
            return fail(str(e), 2)

    rate = supported_rate(sd, device, info, audio.SAMPLE_RATE)
    print(f"recording from {info['name']} at {rate} Hz" +
          (f" for {args.seconds:g} s" if args.seconds else "; press Enter to stop"), file=sys.stderr)
    try:
        samples = record(sd, device, rate, args.seconds, audio.MAX_SECONDS, stream)
    except KeyboardInterrupt:
        return fail("interrupted.", 1)
    except Exception as e:  # PortAudio errors: device busy or gone, unsupported settings
        return fail(f"could not record from {info['name']}: {e}", 2)
    if args.save:
        import soundfile as sf
        sf.write(args.save, samples, rate, subtype="FLOAT")
    started = time.perf_counter()
    try:
        analysis = pipeline.analyse(audio.prepare(samples, rate), model_name)
    except audio.AudioError as e:
        return fail(str(e), 1)
    print(f"{analysis.clip.seconds:.1f} s recorded; model {model_name}; "
          f"analysed in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    print(analysis.text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
