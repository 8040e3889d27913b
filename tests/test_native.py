"""The C kernels of the GRU and LSTM (asr_core/native.py + recurrent_bf16.c): their math against PyTorch's
nn.GRU / nn.LSTM, the bf16 packing, results on real speech against the float32 models, and every way the
kernels can be unavailable."""
import jiwer
import numpy as np
import pytest
import torch
from torch import nn

from asr_core import audio, ctc, features, models, native


@pytest.fixture(scope="module")
def speech(make_speech) -> torch.Tensor:
    """(1, T, 40) normalized MFCCs of a few seconds of synthesized speech."""
    wav = make_speech("a recurrent network carries its hidden state from one frame to the next")
    return features.mfcc(audio.load(str(wav)).samples)[None].contiguous()


@pytest.fixture()
def kernel():
    fns = native.kernel()
    if fns is None:
        pytest.skip(f"the C kernels are not used on this machine: {native.status()}")
    return fns


@pytest.fixture()
def fresh_build(monkeypatch, tmp_path):
    """Forget the built kernels (and the models' fast copies) for one test, with the cache in tmp_path."""
    monkeypatch.setenv("ASR_LAB_CACHE", str(tmp_path))
    native._compiled.cache_clear()
    models._fast_copy.cache_clear()
    yield tmp_path
    native._compiled.cache_clear()
    models._fast_copy.cache_clear()


def weights(rnn: nn.Module, suffix: str = ""):
    return (getattr(rnn, f"{w}_l0{suffix}").detach() for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


def layer_inputs(rnn: nn.GRU, x: torch.Tensor):
    """Layer 0 of a GRU as the reference sees it: (T, 3H) W_i* x + b_i* with b_hr, b_hz added; W_hh; b_hn."""
    H = rnn.hidden_size
    w_ih, w_hh, b_ih, b_hh = weights(rnn)
    gi = (x[0] @ w_ih.t() + b_ih).numpy()
    gi[:, :2 * H] += b_hh[:2 * H].numpy()
    return gi, w_hh.numpy(), b_hh[2 * H:].numpy().copy()


def lstm_inputs(rnn: nn.LSTM, x: torch.Tensor, suffix: str = ""):
    """Layer 0 of an LSTM (one direction) as the reference sees it: (T, 4H) W_i* x + all biases; W_hh."""
    w_ih, w_hh, b_ih, b_hh = weights(rnn, suffix)
    return (x[0] @ w_ih.t() + b_ih + b_hh).numpy(), w_hh.numpy()


def bf16_input_side(rnn: nn.Module, x: torch.Tensor, suffix: str = ""):
    """Layer 0 as the kernel sees it: W_i* x as one bf16 product (as models.fast does), the biases kept apart."""
    w_ih, _, b_ih, b_hh = weights(rnn, suffix)
    return x[0].to(torch.bfloat16) @ w_ih.to(torch.bfloat16).t(), b_ih, b_hh


def test_reference_layer_is_pytorchs_gru(speech):
    """The hand-written step (r, z, n, h' = n + z (h - n)) against nn.GRU, from a zero and from a given state."""
    torch.manual_seed(0)
    rnn = nn.GRU(40, 64, batch_first=True).eval()
    gi, w_hh, b_hn = layer_inputs(rnn, speech)
    h0 = torch.tanh(torch.randn(1, 1, 64))
    with torch.inference_mode():
        want0, want1 = rnn(speech)[0][0].numpy(), rnn(speech, h0)[0][0].numpy()
    np.testing.assert_allclose(native.reference_gru_layer(gi, w_hh, b_hn, np.zeros(64, np.float32)), want0, atol=1e-5)
    np.testing.assert_allclose(native.reference_gru_layer(gi, w_hh, b_hn, h0[0, 0].numpy()), want1, atol=1e-5)


def test_reference_lstm_layer_is_pytorchs_lstm(speech):
    """The hand-written LSTM step (gates i, f, g, o; c' = f c + i g; h' = o tanh c') in both directions."""
    torch.manual_seed(0)
    rnn = nn.LSTM(40, 64, batch_first=True, bidirectional=True).eval()
    with torch.inference_mode():
        want = rnn(speech)[0][0].numpy()
    forward = native.reference_lstm_layer(*lstm_inputs(rnn, speech))
    backward = native.reference_lstm_layer(*lstm_inputs(rnn, speech, "_reverse"), reverse=True)
    np.testing.assert_allclose(np.concatenate([forward, backward], 1), want, atol=1e-5)


def test_pack_puts_bf16_column_pairs_in_blocks_of_16_rows():
    w = np.random.default_rng(1).normal(size=(96, 64)).astype(np.float32)
    packed = native.pack(w)
    assert packed.shape == (6, 32, 16) and packed.dtype == np.uint32
    bf16 = torch.from_numpy(w).to(torch.bfloat16).float().numpy()
    low = ((packed & 0xFFFF).astype(np.uint32) << 16).view(np.float32)   # W[16 b + lane, 2 q]
    high = (packed & 0xFFFF0000).astype(np.uint32).view(np.float32)     # W[16 b + lane, 2 q + 1]
    for b, q, lane in [(0, 0, 0), (0, 0, 15), (2, 7, 3), (5, 31, 15)]:
        assert low[b, q, lane] == bf16[16 * b + lane, 2 * q]
        assert high[b, q, lane] == bf16[16 * b + lane, 2 * q + 1]


def test_kernel_gru_layer_matches_the_float_layer_on_speech(kernel, speech):
    """The shipped GRU's first layer over real speech: bf16 inputs and W_hh h move each hidden value by a little."""
    rnn = models.load("gru").rnn
    H = rnn.hidden_size
    x, w_hh, b_hn = layer_inputs(rnn, speech)
    side, b_ih, b_hh = bf16_input_side(rnn, speech)
    bias = torch.cat([b_ih[:2 * H] + b_hh[:2 * H], b_ih[2 * H:]]).numpy()
    h0 = np.zeros(H, np.float32)
    got = native.gru_layer(kernel, side, bias, native.pack(w_hh), b_hn, h0)
    want = native.reference_gru_layer(x, w_hh, b_hn, h0)
    assert got.shape == want.shape == (speech.shape[1], rnn.hidden_size)
    assert np.abs(got - want).mean() < 5e-3
    assert np.abs(got - want).max() < 0.25
    assert np.all(np.abs(got) <= 1.0)  # h is a mix of tanh outputs and the previous state


def test_kernel_lstm_layer_matches_the_float_layer_on_speech(kernel, speech):
    """The shipped LSTM's first layer over real speech, both directions side by side as in nn.LSTM's output."""
    rnn = models.load("lstm").rnn
    (xf, wf), (xb, wb) = lstm_inputs(rnn, speech), lstm_inputs(rnn, speech, "_reverse")
    (sf, bif, bhf), (sb, bib, bhb) = bf16_input_side(rnn, speech), bf16_input_side(rnn, speech, "_reverse")
    got = native.lstm_layer(kernel, torch.cat([sf, sb], 1), torch.cat([bif + bhf, bib + bhb]).numpy(),
                            [native.pack(wf), native.pack(wb)], rnn.hidden_size)
    want = np.concatenate([native.reference_lstm_layer(xf, wf), native.reference_lstm_layer(xb, wb, reverse=True)], 1)
    assert got.shape == want.shape == (speech.shape[1], 2 * rnn.hidden_size)
    assert np.abs(got - want).mean() < 5e-3
    assert np.abs(got - want).max() < 0.25
    assert np.all(np.abs(got) < 1.0)  # h = o tanh(c)


def pytorch_bf16_lstm() -> models.BF16Copy:
    """The LSTM's copy where the kernels cannot be built but the CPU has native bf16: PyTorch's (oneDNN's) bf16 LSTM."""
    twin = models.build(models.card("lstm"))
    twin.load_state_dict(models.load("lstm").state_dict())
    return models.BF16Copy(twin)


@pytest.mark.parametrize("name, copy", [("gru", "kernel"), ("lstm", "kernel"), ("lstm", "pytorch bf16")])
def test_each_bf16_copy_hears_what_the_float_model_hears(example_wavs, name, copy):
    """Every shipped example through each bf16 copy the app may run (models.fast): float32 out, nearly the same
    transcripts (a one-word clip may lose a letter: "zet" -> "et" for cat.wav), the same best symbol on nearly
    every frame."""
    model = models.load(name)
    if copy == "kernel":
        if native.kernel() is None:
            pytest.skip(f"the C kernels are not used on this machine: {native.status()}")
        fast = models.fast(name)
        assert isinstance(fast, {"gru": models.BF16GRU, "lstm": models.BF16LSTM}[name]) and fast.model is model
    else:
        fast = pytorch_bf16_lstm()
        assert any(p.dtype == torch.bfloat16 for p in fast.parameters())
    same = frames = 0
    want, got = [], []
    for path in example_wavs:
        x = features.mfcc(audio.load(str(path)).samples)[None]
        with torch.inference_mode():
            a, b = model(x)[0].log_softmax(-1), fast(x)[0].log_softmax(-1)
        assert b.dtype == torch.float32 and b.shape == a.shape
        want.append(ctc.greedy(a.numpy()).text)
        got.append(ctc.greedy(b.numpy()).text)
        same += int((a.argmax(-1) == b.argmax(-1)).sum())
        frames += a.shape[0]
        assert (b.exp() - a.exp()).abs().max() < 0.3  # bf16 keeps 8 bits of mantissa: close, not equal
    assert same / frames > 0.99
    assert jiwer.cer(want, got) <= 0.03, list(zip(want, got))  # over all examples: a few characters in a hundred


def test_carrying_the_state_equals_one_pass(kernel, speech):
    """Streaming-style: the state returned for one stretch continues exactly in the next (long-form chunks)."""
    fast = models.fast("gru")
    with torch.inference_mode():
        whole, h_whole = fast.recurrent(speech)
        a, h = fast.recurrent(speech[:, :37])
        b, h2 = fast.recurrent(speech[:, 37:], h)
    np.testing.assert_allclose(torch.cat([a, b], 1).numpy(), whole.numpy(), atol=1e-5)
    np.testing.assert_allclose(h2.numpy(), h_whole.numpy(), atol=1e-5)
    assert h_whole.shape == (3, 1, 320)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_anything_but_one_clip_at_inference_runs_the_float_model(kernel, speech, name):
    fast, model = models.fast(name), models.load(name)
    batch = torch.cat([speech, speech.flip(1)])
    with torch.inference_mode():
        np.testing.assert_array_equal(fast(batch).numpy(), model(batch).numpy())
        lengths = torch.tensor([speech.shape[1]])
        np.testing.assert_array_equal(fast(speech, lengths).numpy(), model(speech, lengths).numpy())
    with torch.enable_grad():
        y = fast(speech)
        assert y.requires_grad
        np.testing.assert_allclose(y.detach().numpy(), model(speech).detach().numpy(), atol=1e-4)


def test_a_build_goes_to_the_cache_and_is_reused(fresh_build, monkeypatch):
    if not native.cpu_has_bf16():
        pytest.skip("this CPU has no AVX-512 BF16")
    stale = fresh_build / "recurrent_bf16-0123456789abcdef.so"  # a build of an earlier version of the source
    stale.write_bytes(b"old")
    if native.kernel() is None:
        pytest.skip(native.status())
    assert not stale.exists()
    built = list(fresh_build.glob("recurrent_bf16-*.so"))
    assert len(built) == 1 and "self-check" in native.status()
    native._compiled.cache_clear()
    monkeypatch.setenv("CC", "/bin/false")  # the cached library is loaded; no compiler is run again
    assert native.kernel() is not None
    assert list(fresh_build.glob("recurrent_bf16-*.so")) == built


@pytest.mark.parametrize("how", ["no compiler", "compiler fails", "no bf16 in the CPU", "ASR_LAB_FP32"])
def test_without_the_kernels_the_models_run_their_other_paths(fresh_build, monkeypatch, how, speech):
    """Each way the kernels can be missing: kernel() is None, status() says why, models.fast gives the float GRU
    and, for the LSTM, PyTorch's bf16 copy on a CPU with native bf16 (else the float LSTM)."""
    monkeypatch.setattr(native, "cpu_has_bf16", lambda: how != "no bf16 in the CPU")
    if how == "no compiler":
        monkeypatch.setenv("CC", "")
        monkeypatch.setattr(native.shutil, "which", lambda name: None)
    elif how == "compiler fails":
        monkeypatch.setenv("CC", "/bin/false")
    elif how == "ASR_LAB_FP32":
        monkeypatch.setenv("ASR_LAB_FP32", "1")
    assert native.kernel() is None
    assert {"no compiler": "no C compiler", "compiler fails": "building recurrent_bf16.c failed",
            "no bf16 in the CPU": "no AVX-512 BF16", "ASR_LAB_FP32": "ASR_LAB_FP32=1"}[how] in native.status()
    assert models.fast("gru") is models.load("gru")
    lstm = models.fast("lstm")
    assert isinstance(lstm, models.BF16Copy) if models.bf16_native() else lstm is models.load("lstm")
    assert not list(fresh_build.glob("*.so"))
    with torch.inference_mode():
        assert ctc.greedy(models.fast("gru")(speech)[0].log_softmax(-1).numpy()).text == \
               ctc.greedy(models.load("gru")(speech)[0].log_softmax(-1).numpy()).text


def test_hidden_sizes_the_kernel_cannot_take():
    assert native.supports(320) and native.supports(256)
    assert not native.supports(100) and not native.supports(48)
