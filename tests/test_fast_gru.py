"""models.gru (the faster GRU inference path) gives nn.GRU's results, layer by layer, on real speech features."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from asr_core import features, models

ATOL = 1e-4


@pytest.fixture(scope="module")
def speech_feats(make_speech) -> torch.Tensor:
    """(1, T, 40) normalized MFCCs of a few seconds of synthesized speech."""
    from asr_core import audio
    wav = make_speech("the network reads one frame every ten milliseconds and keeps a memory of what it heard")
    return features.mfcc(audio.load(str(wav)).samples)[None].contiguous()


def random_gru(input_size: int, hidden: int, layers: int, seed: int, scale: float = 1.0) -> nn.GRU:
    torch.manual_seed(seed)
    rnn = nn.GRU(input_size, hidden, num_layers=layers, batch_first=True).eval()
    with torch.no_grad():
        for p in rnn.parameters():
            p.mul_(scale)
    return rnn


def first_layers(rnn: nn.GRU, n: int) -> nn.GRU:
    """An nn.GRU made of the first n layers of `rnn` (same weights): its output is layer n's output."""
    part = nn.GRU(rnn.input_size, rnn.hidden_size, num_layers=n, batch_first=True).eval()
    part.load_state_dict({k: v for k, v in rnn.state_dict().items() if int(k.rsplit("_l", 1)[1]) < n})
    return part


def compare(rnn: nn.GRU, x: torch.Tensor, hx=None):
    with torch.inference_mode():
        want_out, want_h = rnn(x, hx)
        got_out, got_h = models.gru(rnn, x, hx)
    assert got_out.shape == want_out.shape and got_h.shape == want_h.shape
    np.testing.assert_allclose(got_out.numpy(), want_out.numpy(), atol=ATOL)
    np.testing.assert_allclose(got_h.numpy(), want_h.numpy(), atol=ATOL)
    return got_out


def shipped_gru() -> nn.GRU:
    if "gru" not in models.available():
        pytest.skip("no shipped GRU")
    return models.load("gru").rnn


def test_every_layer_of_the_shipped_gru(speech_feats):
    rnn = shipped_gru()
    for n in range(1, rnn.num_layers + 1):
        out = compare(first_layers(rnn, n), speech_feats)
        assert out.abs().max() > 0.1   # the layer is really active on speech, not a trivial match of zeros


def test_shipped_model_log_probs(speech_feats):
    """The whole float32 model (RecurrentASR.forward runs models.gru, then the read-out): the same distributions
    as through nn.GRU. (The app's bf16 kernel copy, models.fast, is compared with this in tests/test_native.py.)"""
    if "gru" not in models.available():
        pytest.skip("no shipped GRU")
    model = models.load("gru")
    with torch.inference_mode():
        got = model(speech_feats).log_softmax(-1)[0].numpy()
        want = model.fc(model.rnn(speech_feats)[0]).log_softmax(-1)[0].numpy()
    np.testing.assert_allclose(np.exp(got), np.exp(want), atol=ATOL)
    assert (got.argmax(1) == want.argmax(1)).mean() > 0.99


@pytest.mark.parametrize("gate", ["r", "z", "n"])
def test_each_gate(speech_feats, gate):
    """One gate's weights made large (so that gate dominates the state): still nn.GRU's result, so each gate
    reads its own rows of the weight matrices in PyTorch's [r, z, n] order."""
    rnn = random_gru(40, 64, 2, seed=3, scale=0.5)
    g = "rzn".index(gate)
    with torch.no_grad():
        for name, p in rnn.named_parameters():
            p[g * 64:(g + 1) * 64] *= 6.0
    compare(rnn, speech_feats)


@pytest.mark.parametrize("input_size,hidden,layers", [(40, 32, 1), (40, 100, 3), (40, 320, 2)])
def test_other_shapes_and_a_starting_state(speech_feats, input_size, hidden, layers):
    rnn = random_gru(input_size, hidden, layers, seed=hidden)
    compare(rnn, speech_feats)
    hx = 0.5 * torch.randn(layers, 1, hidden, generator=torch.Generator().manual_seed(1))
    compare(rnn, speech_feats, hx)


def test_state_carried_across_chunks(speech_feats):
    """Feeding the clip in pieces, passing h_n on, gives the one-pass result (as streaming does)."""
    rnn = random_gru(40, 48, 2, seed=5)
    with torch.inference_mode():
        whole = rnn(speech_feats)[0]
        pieces, h = [], None
        for start in range(0, speech_feats.shape[1], 37):
            out, h = models.recurrent(rnn, speech_feats[:, start:start + 37], h)
            pieces.append(out)
    np.testing.assert_allclose(torch.cat(pieces, 1).numpy(), whole.numpy(), atol=ATOL)


def test_other_cases_run_nn_gru_itself(speech_feats):
    """Gradients, training mode and batches of several clips go through nn.GRU unchanged (bit for bit)."""
    rnn = random_gru(40, 16, 2, seed=7)
    with torch.no_grad():
        batch = speech_feats.repeat(2, 1, 1)
        assert torch.equal(models.gru(rnn, batch)[0], rnn(batch)[0])
    out, _ = models.gru(rnn, speech_feats)   # grad enabled: autograd works through it
    out.sum().backward()
    assert rnn.weight_hh_l0.grad is not None and rnn.weight_hh_l0.grad.abs().sum() > 0


def test_weights_format_unchanged():
    """The fast path only reads the nn.GRU's parameters: the model's state_dict is the safetensors file's."""
    if "gru" not in models.available():
        pytest.skip("no shipped GRU")
    model = models.load("gru")
    assert isinstance(model.rnn, nn.GRU) and type(model.rnn) is nn.GRU
    assert set(load_file(models.MODELS_DIR / "gru.safetensors")) == set(model.state_dict())
