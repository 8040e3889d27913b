"""The recurrences written out by hand, one time step at a time, checked against the shipped models.

    h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h),  h_0 = 0        (SimpleASR_RNN; b_h = b_ih + b_hh)
    o_t = softmax(W_ho h_t + b_o)

The hand versions use float64 and plain Python loops over t, like micrograd: nothing is batched or fused.
"""
import numpy as np
import pytest
import torch
from torch import nn

from asr_core import features, models, pipeline
from asr_core.vocab import NUM_CLASSES


@pytest.fixture(autouse=True)
def no_grad():
    """The hand computations read the weights directly; no autograd graph is needed."""
    with torch.no_grad():
        yield


def softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max())
    return e / e.sum()


def rnn_by_hand(model: models.SimpleASR_RNN, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, 40) -> (hidden states (T, H), output distributions (T, 29)), one step at a time."""
    W_xh = model.rnn.weight_ih_l0.double()
    W_hh = model.rnn.weight_hh_l0.double()
    b_h = (model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0).double()
    W_ho, b_o = model.fc.weight.double(), model.fc.bias.double()
    h = torch.zeros(model.hidden_size, dtype=torch.float64)  # h_0 = 0
    hs, os = [], []
    for x_t in x.double():
        h = torch.tanh(W_hh @ h + W_xh @ x_t + b_h)
        hs.append(h)
        os.append(softmax(W_ho @ h + b_o))
    return torch.stack(hs), torch.stack(os)


@pytest.fixture(scope="module")
def rnn():
    model = models.load("rnn")
    assert isinstance(model, models.SimpleASR_RNN)
    return model


@pytest.fixture(scope="module")
def clip_feats(speech_clip) -> torch.Tensor:
    return features.mfcc(speech_clip.samples)


def test_weight_shapes_are_the_textbook_ones(rnn):
    H = rnn.hidden_size
    assert rnn.rnn.weight_ih_l0.shape == (H, 40)         # W_xh
    assert rnn.rnn.weight_hh_l0.shape == (H, H)          # W_hh
    assert rnn.fc.weight.shape == (NUM_CLASSES, H)       # W_ho
    assert rnn.rnn.nonlinearity == "tanh" and rnn.rnn.num_layers == 1 and not rnn.rnn.bidirectional


def test_hand_recurrence_matches_model_on_real_mfccs(rnn, clip_feats):
    _, o_hand = rnn_by_hand(rnn, clip_feats)
    o_model = np.exp(pipeline.run_model("rnn", clip_feats))  # what the app shows
    assert o_model.shape == (clip_feats.shape[0], NUM_CLASSES)
    np.testing.assert_allclose(o_model, o_hand.numpy(), atol=1e-5)


def test_hand_hidden_states_match_nn_rnn(rnn, clip_feats):
    h_hand, _ = rnn_by_hand(rnn, clip_feats)
    h_torch, h_last = rnn.rnn(clip_feats[None], torch.zeros(1, 1, rnn.hidden_size))
    np.testing.assert_allclose(h_torch[0].numpy(), h_hand.numpy(), atol=1e-5)
    np.testing.assert_allclose(h_last[0, 0].numpy(), h_hand[-1].numpy(), atol=1e-5)


def test_initial_state_is_zero(rnn, clip_feats):
    x_1 = clip_feats[0].double()
    b_h = (rnn.rnn.bias_ih_l0 + rnn.rnn.bias_hh_l0).double()
    h_1 = torch.tanh(rnn.rnn.weight_ih_l0.double() @ x_1 + b_h)  # no W_hh h_0 term at all
    o_1 = softmax(rnn.fc.weight.double() @ h_1 + rnn.fc.bias.double())
    o_model = np.exp(pipeline.run_model("rnn", clip_feats))
    np.testing.assert_allclose(o_model[0], o_1.numpy(), atol=1e-5)
    # ...and a different start would have shown: the first step depends on h_0 through W_hh.
    h_1_other = torch.tanh(rnn.rnn.weight_hh_l0.double() @ torch.ones(rnn.hidden_size, dtype=torch.float64)
                           + rnn.rnn.weight_ih_l0.double() @ x_1 + b_h)
    assert not torch.allclose(h_1, h_1_other, atol=1e-3)


def test_each_output_depends_only_on_the_past(rnn, clip_feats):
    """o_t is computed from x_1..x_t: changing frames after t leaves o_1..o_t unchanged."""
    t = clip_feats.shape[0] // 2
    changed = clip_feats.clone()
    changed[t:] = torch.randn_like(changed[t:])
    a = pipeline.run_model("rnn", clip_feats)
    b = pipeline.run_model("rnn", changed)
    np.testing.assert_allclose(a[:t], b[:t], atol=1e-6)
    assert not np.allclose(a[t:], b[t:], atol=1e-3)


# --- LSTM and GRU cells by hand, checked against one layer of nn.LSTM / nn.GRU ---------------------------

def sigmoid(z):
    return 1 / (1 + torch.exp(-z))


def lstm_by_hand(W_ih, W_hh, b_ih, b_hh, x):
    """PyTorch's gate order is input, forget, cell (g), output."""
    H = W_hh.shape[1]
    h = c = torch.zeros(H, dtype=torch.float64)
    out = []
    for x_t in x:
        z = W_ih @ x_t + b_ih + W_hh @ h + b_hh
        i, f, g, o = sigmoid(z[:H]), sigmoid(z[H:2 * H]), torch.tanh(z[2 * H:3 * H]), sigmoid(z[3 * H:])
        c = f * c + i * g
        h = o * torch.tanh(c)
        out.append(h)
    return torch.stack(out)


def gru_by_hand(W_ih, W_hh, b_ih, b_hh, x):
    """PyTorch's gate order is reset (r), update (z), new (n); r gates the recurrent part of n only."""
    H = W_hh.shape[1]
    h = torch.zeros(H, dtype=torch.float64)
    out = []
    for x_t in x:
        gi, gh = W_ih @ x_t + b_ih, W_hh @ h + b_hh
        r = sigmoid(gi[:H] + gh[:H])
        z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        n = torch.tanh(gi[2 * H:] + r * gh[2 * H:])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize("name, by_hand", [("lstm", lstm_by_hand), ("gru", gru_by_hand)])
def test_first_layer_cells_by_hand(name, by_hand, clip_feats):
    """The first layer of the shipped model, copied into a one-layer nn.LSTM/nn.GRU (both directions
    if the model is bidirectional), against the hand-written cell run forwards (and backwards)."""
    model = models.load(name)
    rnn = model.rnn
    single = type(rnn)(rnn.input_size, rnn.hidden_size, num_layers=1, batch_first=True,
                       bidirectional=rnn.bidirectional)
    single.load_state_dict({k: v for k, v in rnn.state_dict().items() if "_l0" in k})
    x = clip_feats[:120]
    out = single(x[None])[0][0].double()
    H = rnn.hidden_size

    def weights(suffix):
        return [getattr(rnn, f"{w}_l0{suffix}").double() for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]

    forward = by_hand(*weights(""), x.double())
    np.testing.assert_allclose(out[:, :H].numpy(), forward.numpy(), atol=1e-5)
    if rnn.bidirectional:
        backward = by_hand(*weights("_reverse"), x.double().flip(0)).flip(0)
        np.testing.assert_allclose(out[:, H:].numpy(), backward.numpy(), atol=1e-5)


def test_softmax_outputs_are_distributions(clip_feats):
    for name in models.available():
        probs = np.exp(pipeline.run_model(name, clip_feats))
        assert probs.shape == (clip_feats.shape[0], NUM_CLASSES)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert probs.min() >= 0
