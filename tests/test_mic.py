"""`python -m asr_core.mic` against a real PortAudio capture device.

ALSA's `file` plugin, configured in an .asoundrc under a temporary HOME, gives PortAudio a capture
device whose samples come from a raw file (its `infile`), on top of the `null` device: the program
records synthesized speech as it would record a microphone. (The null device has no clock, so the
capture runs faster than real time and PortAudio may drop a block; the checks allow for that.)
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_core import audio

REPO = Path(__file__).resolve().parents[1]

ASOUNDRC = """
pcm.filemic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{raw}"
    format "raw"
    hint {{ show on description "File microphone (test)" }}
}}
pcm.!default {{
    type plug
    slave {{ pcm "filemic" format S16_LE rate 16000 channels 1 }}
    hint {{ show on description "Default" }}
}}
"""


def portaudio_available() -> bool:
    try:
        import sounddevice  # noqa: F401
        return True
    except OSError:
        return False


needs_portaudio = pytest.mark.skipif(not portaudio_available(), reason="the PortAudio library is not installed")


def run_mic(args, home: Path, extra_env=None, timeout=600, prelude="") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALSA_")}
    env.update(HOME=str(home), PYTHONPATH=str(REPO), **(extra_env or {}))
    code = f"{prelude}import sys; from asr_core import mic; sys.exit(mic.main({list(args)!r}))"
    return subprocess.run([sys.executable, "-c", code], cwd=home, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def file_mic(tmp_path_factory, speech_wav):
    """A HOME whose .asoundrc makes the default capture device play `speech` (16 kHz int16)."""
    home = tmp_path_factory.mktemp("home")
    speech = (audio.load(str(speech_wav)).samples * 0.9 * 32767).astype(np.int16)
    raw = home / "speech.raw"
    speech.tofile(raw)
    (home / ".asoundrc").write_text(ASOUNDRC.format(raw=raw))
    return home, speech


@needs_portaudio
def test_lists_the_capture_device(file_mic):
    home, _ = file_mic
    r = run_mic(["--list-devices"], home)
    assert r.returncode == 0, r.stderr
    assert "filemic" in r.stdout and "default" in r.stdout


@needs_portaudio
def test_records_the_device_and_prints_a_transcript(file_mic):
    home, speech = file_mic
    seconds = len(speech) / audio.SAMPLE_RATE + 0.5
    out = home / "take.wav"
    r = run_mic(["--seconds", f"{seconds:.1f}", "--model", "gru", "--save", str(out)], home)
    assert r.returncode == 0, r.stderr
    assert "recording from default at 16000 Hz" in r.stderr
    assert "dBFS" in r.stderr and f"{seconds:.1f} s recorded" in r.stderr   # the meter and the summary
    assert "Traceback" not in r.stderr
    assert len(r.stdout.splitlines()) == 1          # the transcript line (its text depends on the weights)
    got, rate = sf.read(out, dtype="float32")
    got = np.round(got * 32768).astype(np.int16)   # PortAudio delivered int16 / 32768
    assert rate == audio.SAMPLE_RATE and len(got) == pytest.approx(seconds * rate, abs=rate * 0.11)
    # What was captured is the file: every 25 ms piece of the first second is found in it, in order.
    source, at = speech.tobytes(), 0
    for i in range(0, rate, 400):
        found = source.find(got[i:i + 400].tobytes(), at)
        assert found >= at, f"recorded samples {i}..{i + 400} are not in the source"
        at = found
    assert np.std(got[-rate // 4:]) < 0.01 * np.std(speech)   # the file has ended: no more speech


@needs_portaudio
def test_streaming_shows_partial_transcripts(file_mic):
    home, _ = file_mic
    r = run_mic(["--seconds", "1.5", "--stream"], home)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("dBFS") >= 10        # the meter was redrawn for every 0.1 s block
    assert "model gru" in r.stderr


@needs_portaudio
def test_bidirectional_model_cannot_stream(file_mic):
    home, _ = file_mic
    r = run_mic(["--seconds", "1", "--stream", "--model", "lstm"], home)
    assert r.returncode == 2 and "bidirectional" in r.stderr


@needs_portaudio
def test_silence_is_reported(tmp_path):
    np.zeros(2 * audio.SAMPLE_RATE, np.int16).tofile(tmp_path / "silence.raw")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(raw=tmp_path / "silence.raw"))
    r = run_mic(["--seconds", "1"], tmp_path)
    assert r.returncode == 1 and "silent" in r.stderr and "Traceback" not in r.stderr


@needs_portaudio
def test_no_input_device(tmp_path):
    """An ALSA configuration whose only device is a sound card that does not exist: no input device."""
    empty = tmp_path / "alsa.conf"
    empty.write_text("pcm.!default { type hw card 99 }\n")
    r = run_mic(["--seconds", "1"], tmp_path, {"ALSA_CONFIG_PATH": str(empty)})
    assert r.returncode == 2
    assert "no audio input device found" in r.stderr and "Traceback" not in r.stderr
    r = run_mic(["--list-devices"], tmp_path, {"ALSA_CONFIG_PATH": str(empty)})
    assert r.returncode == 2 and "no audio input device" in r.stderr


def test_no_portaudio(tmp_path):
    """Without PortAudio (sounddevice cannot be imported) the program says so and exits with status 2."""
    r = run_mic(["--seconds", "1"], tmp_path, prelude="import sys; sys.modules['sounddevice'] = None; ")
    assert r.returncode == 2
    assert "PortAudio is not available" in r.stderr and "Traceback" not in r.stderr
