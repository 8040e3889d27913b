"""The teaching endpoints (/align, /gradients, /shuffle) through gradio_client against the running app."""
from __future__ import annotations

from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from asr_core import models
from asr_core.vocab import normalize_text

SERVER_LOG = Path(__file__).resolve().parent / "artifacts" / "server.log"   # conftest's app_server writes it

REFERENCE = "hello world, this is a test of the speech lab"   # what conftest's speech_wav says


@pytest.fixture(scope="module")
def client(app_server):
    return Client(app_server, verbose=False)


def test_align_endpoint(client, speech_wav):
    out = client.predict(handle_file(str(speech_wav)), REFERENCE, "rnn", api_name="/align")
    result = out[0]
    text = normalize_text(REFERENCE)
    assert result["text"] == text and result["model"] == "rnn"
    assert "".join(c["text"] for c in result["chars"]) == text
    assert [w["text"] for w in result["words"]] == text.split()
    starts = [c["start"] for c in result["chars"]]
    assert starts == sorted(starts) and result["chars"][-1]["end"] <= result["frames"]
    assert result["ctc_loss"]["total"] > 0
    assert result["ctc_loss"]["per_char"] == pytest.approx(result["ctc_loss"]["total"] / len(text), rel=1e-3)


def test_align_endpoint_explains_a_missing_reference(client, speech_wav):
    with pytest.raises(Exception, match="reference"):
        client.predict(handle_file(str(speech_wav)), "   ", "rnn", api_name="/align")


def test_user_errors_leave_no_traceback_in_the_server_log(client, speech_wav, tmp_path):
    """A missing reference or an unreadable clip is the user's mistake: a message, not a logged crash
    (Gradio prints the traceback of a gr.Error, message included, unless print_exception=False)."""
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are my lecture notes, not a recording")
    calls = [((handle_file(str(speech_wav)), " ", "rnn"), "/align", "Type what was said"),
             ((handle_file(str(not_audio)), "hello", "rnn"), "/align", "could not be read as audio"),
             ((handle_file(str(not_audio)),), "/gradients", "could not be read as audio")]
    for args, api_name, message in calls:
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name=api_name)
    log = SERVER_LOG.read_text()
    assert "Type what was said" not in log and "could not be read as audio" not in log, log[-3000:]


def test_gradients_endpoint(client, speech_wav):
    out = client.predict(handle_file(str(speech_wav)), api_name="/gradients")
    result = out[0]
    assert set(result["models"]) == set(models.available())
    lengths = {len(v) for v in result["models"].values()}
    assert len(lengths) == 1 and lengths.pop() > 50
    for pairs in result["models"].values():
        assert [d for d, _ in pairs] == list(range(len(pairs)))
        assert all(n >= 0 for _, n in pairs) and pairs[0][1] > 0
    # the plain RNN's gradient vanishes (a gated model's need not: the GRU of 5 December keeps 1.05x of it here)
    rnn = result["models"]["rnn"]
    assert rnn[50][1] < rnn[0][1] / 100
    # the reading names the model that keeps the least, as the returned numbers say
    kept = {name: pairs[50][1] / pairs[0][1] for name, pairs in result["models"].items()}
    assert result["reading"].startswith("50 frames")
    assert f"the {min(kept, key=kept.get).upper()} keeps the least" in result["reading"]


def test_shuffle_endpoint(client, speech_wav):
    out = client.predict(handle_file(str(speech_wav)), "gru", REFERENCE, 3, api_name="/shuffle")
    result = out[0]
    assert result["model"] == "gru" and result["seed"] == 3
    assert result["same_set_of_frames"] is True and result["frames"] > 50
    assert result["mean_output_change"] > 0
    assert set(result["reference_ctc_loss"]) == {"original", "shuffled"}
