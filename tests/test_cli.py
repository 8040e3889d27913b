"""`python -m asr_core.transcribe`: one transcript (or JSON record) per file, clear errors, honest exit code.

Three tests run the real command in a subprocess; the rest call its main() in-process (same code, no
second torch start-up).
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr_core import audio, features, pipeline, transcribe

REPO = Path(__file__).resolve().parents[1]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asr_core.transcribe", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def run_main(capsys, *args) -> tuple[int, str, str]:
    code = transcribe.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def not_audio(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "shopping_list.wav"
    path.write_text("eggs, milk, bread\n")
    return path


def check_record(r: dict, model: str):
    assert r["model"] == model and r["decoder"] == "greedy"
    clip = audio.load(r["file"])
    assert r["seconds"] == pytest.approx(clip.seconds, abs=1e-3)
    assert r["frames"] == 1 + len(clip.samples) // features.HOP_LENGTH  # T: one frame per 10 ms
    assert abs(r["frames"] - 100 * r["seconds"]) <= 1
    assert r["chars"] == len(r["transcript"]) <= r["frames"]             # L <= T
    assert r["transcript"] == pipeline.transcribe_file(r["file"], model).text


def test_text_output_one_line_per_file(speech_wav, speech_wav2):
    result = cli(speech_wav, speech_wav2)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    for line, path in zip(lines, (speech_wav, speech_wav2)):
        name, _, text = line.rpartition(": ")
        assert name == str(path)
        assert text == pipeline.transcribe_file(str(path)).text


def test_json_output_one_record_per_file(speech_wav, speech_wav2):
    result = cli("--json", speech_wav, speech_wav2)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(speech_wav), str(speech_wav2)]
    for r in records:
        check_record(r, pipeline.default_model())  # the default is the best shipped model


def test_non_audio_file_gives_a_clear_message_and_the_others_still_run(speech_wav, not_audio):
    result = cli(not_audio, speech_wav)
    assert result.returncode != 0
    assert f"{not_audio}: This file could not be read as audio" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.startswith(f"{speech_wav}: ")  # the good file is still transcribed


def test_one_file_prints_the_transcript_alone(capsys, speech_wav):
    code, out, _ = run_main(capsys, speech_wav)
    assert code == 0
    assert out == pipeline.transcribe_file(str(speech_wav)).text + "\n"


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_json_records_for_every_model(capsys, speech_wav2, model):
    code, out, _ = run_main(capsys, "--model", model, "--json", speech_wav2)
    assert code == 0
    check_record(json.loads(out), model)


def test_missing_file(capsys, tmp_path, speech_wav):
    code, out, err = run_main(capsys, tmp_path / "nowhere.wav", speech_wav)
    assert code == 1
    assert f"{tmp_path / 'nowhere.wav'}: no such file" in err
    assert out.startswith(f"{speech_wav}: ")


def test_unknown_model_is_refused(capsys, speech_wav):
    with pytest.raises(SystemExit) as exit_:
        transcribe.main(["--model", "transformer", str(speech_wav)])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_beam_decoder(capsys, speech_wav2):
    beam = pytest.importorskip("asr_core.beam")
    code, out, _ = run_main(capsys, "--model", "rnn", "--decoder", "beam", "--json", speech_wav2)
    assert code == 0
    r = json.loads(out)
    assert r["decoder"] == "beam" and r["chars"] == len(r["transcript"]) <= r["frames"]
    analysis = pipeline.transcribe_file(str(speech_wav2), "rnn")
    assert r["transcript"] == beam.decode(analysis.log_probs, "beam", "rnn")
