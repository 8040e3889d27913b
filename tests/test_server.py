"""The running app (`python app.py`) through its public API, as gradio_client sees it."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from asr_core import models, pipeline, transcribe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False, analytics_enabled=False, download_files=False)


def is_placeholder(name: str) -> bool:
    return "UNTRAINED" in str(models.card(name).get("status", "")).upper()


def test_transcribe_endpoint_is_public(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert "/transcribe" in api["named_endpoints"]


def test_api_transcript_equals_the_cli_transcript(client, speech_wav):
    model = pipeline.default_model()
    result = client.predict(handle_file(str(speech_wav)), model, api_name="/transcribe")
    text = result[0]
    assert isinstance(text, str)
    if not is_placeholder(model):
        assert text.strip()  # a trained model hears something in clear speech
    cli = subprocess.run([sys.executable, "-m", "asr_core.transcribe", "--json", "--model", model, str(speech_wav)],
                         cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    assert text == json.loads(cli.stdout)["transcript"]


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_every_model_through_the_api(client, speech_wav2, model):
    result = client.predict(handle_file(str(speech_wav2)), model, api_name="/transcribe")
    assert result[0] == transcribe.transcribe(str(speech_wav2), model)["transcript"]


def test_beam_decoder_through_the_api(client, speech_wav2):
    """The third input picks the decoder; the API's beam transcript is the CLI's --decoder beam one."""
    pytest.importorskip("asr_core.beam")
    result = client.predict(handle_file(str(speech_wav2)), "rnn", "beam", api_name="/transcribe")
    assert result[0] == transcribe.transcribe(str(speech_wav2), "rnn", "beam")["transcript"]


def test_the_model_argument_defaults_to_the_best_model(client, speech_wav2):
    result = client.predict(handle_file(str(speech_wav2)), api_name="/transcribe")
    assert result[0] == transcribe.transcribe(str(speech_wav2), pipeline.default_model())["transcript"]


def test_non_audio_upload_gets_a_readable_error_and_the_server_keeps_working(client, tmp_path, speech_wav2):
    bad = tmp_path / "not_audio.wav"
    bad.write_text("this is a text file, not a recording\n")
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(bad)), api_name="/transcribe")
    message = str(err.value)
    assert "could not be read as audio" in message
    assert "Traceback" not in message
    # the server is still there and still transcribes
    result = client.predict(handle_file(str(speech_wav2)), "rnn", api_name="/transcribe")
    assert result[0] == transcribe.transcribe(str(speech_wav2), "rnn")["transcript"]
