"""Fresh per-batch augmentation (asr_core.onthefly): the audio pack round-trips, the batched MFCCs are
features.mfcc's, the batched augmentation keeps lengths and levels sane, and training runs from a pack."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from asr_core import audio, augment, examples, features, models, onthefly, train
from asr_core.vocab import decode

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg (libopus)")

CLIPS = examples.listing()[:6]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack")
    rows = [(str(e.path), "examples", "eval" if i == 0 else "train", e.voice, e.text) for i, e in enumerate(CLIPS)]
    onthefly.write_pack(rows, d / "pack", {"examples": 24})
    return onthefly.decode_pack(d / "pack", d / "audio.safetensors", jobs=2)


def test_pack_round_trips_every_clip_with_its_text_and_split(pack):
    d = load_file(pack)
    assert len(d["sample_lengths"]) == len(CLIPS)
    assert d["eval"].tolist() == [True] + [False] * (len(CLIPS) - 1)
    lo = np.concatenate([[0], np.cumsum(d["label_lengths"].numpy())])
    texts = [decode(d["labels"][lo[i]:lo[i + 1]].long().tolist()) for i in range(len(CLIPS))]
    assert texts == [e.text for e in CLIPS]
    for n, e in zip(d["sample_lengths"].tolist(), CLIPS):  # Opus keeps the duration (to a frame)
        assert abs(n - len(audio.load(str(e.path)).samples)) < 0.02 * audio.SAMPLE_RATE
    hours = onthefly.corpus_hours(pack)
    assert hours["examples/train"]["clips"] == len(CLIPS) - 1 and hours["examples/eval"]["clips"] == 1


def test_batched_mfcc_equals_features_mfcc_for_each_clip(pack):
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    waves = [w.float() / 32768 for w in s.waves]
    lengths = torch.tensor([len(w) for w in waves])
    x, n = onthefly.mfcc_batch(features.mfcc_transform(), torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths)
    for i, w in enumerate(waves):
        ref = features.mfcc(w.numpy())
        assert int(n[i]) == ref.shape[0] == s.frames[i]
        assert torch.allclose(x[i, :n[i]], ref, atol=1e-3), (i, (x[i, :n[i]] - ref).abs().max())
        assert not x[i, n[i]:].any()  # padding stays zero


def test_batched_mfcc_with_a_warped_filterbank_per_clip_equals_vtlp_mfcc_for_each_clip(pack):
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    waves = [w.float() / 32768 for w in s.waves]
    lengths = torch.tensor([len(w) for w in waves])
    alphas = torch.tensor([0.9, 1.0, 0.94, 1.07, 1.1, 1.03])[:len(waves)]  # one per clip; the second one unwarped
    fb = augment.vtlp_filterbanks(alphas)
    assert fb.shape == (len(waves), *features.mfcc_transform().MelSpectrogram.mel_scale.fb.shape)
    x, n = onthefly.mfcc_batch(features.mfcc_transform(), torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths, fb)
    plain, _ = onthefly.mfcc_batch(features.mfcc_transform(), torch.nn.utils.rnn.pad_sequence(waves, batch_first=True), lengths)
    for i, (w, a) in enumerate(zip(waves, alphas.tolist())):
        ref = augment.vtlp_mfcc(w.numpy(), a)
        assert torch.allclose(x[i, :n[i]], ref, atol=1e-3), (i, a, (x[i, :n[i]] - ref).abs().max())
        moved = float((x[i, :n[i]] - plain[i, :n[i]]).abs().max())
        assert moved > 0.1 if a != 1.0 else moved < 1e-5  # each warp really moved its clip's features, and only its
        assert not x[i, n[i]:].any()


def test_a_vtlp_batcher_warps_the_same_fresh_copies_it_would_make_without_it(pack):
    """With vtlp the waveform chain draws the same copies (the warp factors are drawn after it); the features
    are those copies read through the warped filterbank."""
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    idx = list(range(len(s)))
    x, xl, _, _ = onthefly.Batcher(s, seed=3, p_clean=0.0, vtlp=(1.1, 1.1))(idx, masked=False)
    waves = torch.nn.utils.rnn.pad_sequence([w.float() / 32768 for w in s.waves], batch_first=True)
    w, n = onthefly.augment_batch(waves, torch.tensor([len(w) for w in s.waves]), torch.Generator().manual_seed(3), 0.0)
    want, wl = onthefly.mfcc_batch(features.mfcc_transform(), w, n, augment.vtlp_filterbanks(torch.full((len(idx),), 1.1)))
    assert torch.equal(xl, wl) and torch.allclose(x, want, atol=1e-4)
    plain, _, _, _ = onthefly.Batcher(s, seed=3, p_clean=0.0)(idx, masked=False)
    assert (x - plain).abs().amax(dim=(1, 2)).min() > 0.1  # and every clip was warped
    clean, _, _, _ = onthefly.Batcher(s, seed=3, p_clean=1.0, vtlp=(1.1, 1.1))(idx, masked=False)
    assert torch.allclose(clean, onthefly.Batcher(s, seed=3, p_clean=1.0)(idx, masked=False)[0])  # clean: unwarped


def test_augmented_batches_change_speed_level_and_sound_but_stay_sane(pack):
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    waves = [w.float() / 32768 for w in s.waves]
    lengths = torch.tensor([len(w) for w in waves])
    w = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    seen = set()
    for seed in range(6):
        y, new = onthefly.augment_batch(w, lengths, torch.Generator().manual_seed(seed), p_clean=0.0)
        ratio = (lengths / new).tolist()
        for r in ratio:  # every length follows one of the speed factors
            assert min(abs(r - f) for f in onthefly.SPEEDS) < 2e-3
        seen |= {min(onthefly.SPEEDS, key=lambda f: abs(f - r)) for r in ratio}
        assert torch.isfinite(y).all() and y.abs().max() <= 1.0
        for i in range(len(waves)):
            assert not y[i, new[i]:].any()
            assert 0.15 <= float(y[i].abs().max()) <= 1.0  # gain 0.2-1.0 of full scale
    assert len(seen) >= 4  # the factors really vary
    # a clean clip only changes level; an augmented one differs in shape
    y, new = onthefly.augment_batch(w, lengths, torch.Generator().manual_seed(0), p_clean=1.0)
    assert torch.equal(new, lengths)
    for i in range(len(waves)):
        a, b = y[i, :lengths[i]], w[i, :lengths[i]]
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9999
    y, new = onthefly.augment_batch(w, lengths, torch.Generator().manual_seed(1), p_clean=0.0)
    same = [i for i in range(len(waves)) if new[i] == lengths[i]]
    assert all(torch.corrcoef(torch.stack([y[i, :lengths[i]], w[i, :lengths[i]]]))[0, 1] < 0.999 for i in same)


def test_batcher_makes_padded_features_and_labels_that_ctc_accepts(pack):
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    x, xl, y, yl = onthefly.Batcher(s, seed=0)(list(range(len(s))))
    assert x.shape[0] == len(s) and x.shape[2] == 40 and int(xl.max()) == x.shape[1]
    assert yl.tolist() == [len(l) for l in s.labels] and len(y) == int(yl.sum())
    model = models.SimpleASR_RNN()
    loss = torch.nn.functional.ctc_loss(model(x, xl).log_softmax(-1).transpose(0, 1), y, xl, yl)
    assert torch.isfinite(loss)


def test_training_from_a_pack_starts_from_given_weights_and_writes_its_card(pack, tmp_path):
    cmd = [sys.executable, "-m", "asr_core.train", "--model", "rnn", "--audio", str(pack), "--init-from", "rnn",
           "--max-steps", "2", "--epochs", "50", "--batch-frames", "4000", "--lr", "1e-9", "--warmup", "1",
           "--eval-limit", "5", "--out-dir", str(tmp_path / "out"), "--ckpt-dir", str(tmp_path / "ck"), "--threads", "1",
           "--vtlp"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "out" / "rnn.json").read_text())
    t = card["training"]
    assert t["init_from"] == "rnn" and t["steps"] == 2
    assert t["data"]["vtlp"] == "alpha ~ U(0.9, 1.1) per fresh copy"
    assert t["data"]["corpora"]["examples/train"]["clips"] == len(CLIPS) - 1
    assert "cer_examples-test-pack" in card["curve"][-1]  # the pack's held-out clip draws the curve
    trained, shipped = load_file(tmp_path / "out" / "rnn.safetensors"), models.load("rnn").state_dict()
    assert all(torch.allclose(trained[k], shipped[k], atol=1e-5) for k in shipped)  # lr 1e-9: still the init


def test_an_online_teacher_hears_each_clip_of_the_unmasked_batch_as_it_would_alone(pack):
    """With --audio a teacher runs on every fresh batch before SpecAugment: padded together with other clips
    it says per clip what it says of that clip alone, and --teacher-delay shifts the whole batch."""
    torch.manual_seed(0)  # SpecAugment draws its masks from torch's global generator
    s = onthefly.AudioSet(pack, torch.device("cpu"))
    batcher = onthefly.Batcher(s, seed=3)
    x, xl, _, _ = batcher(list(range(len(s))), masked=False)
    teacher = train.teacher_model("lstm")
    with torch.no_grad():
        soft = train.delayed(teacher(x, xl).log_softmax(-1), 4)
        for b in range(len(s)):
            alone = train.delayed(teacher(x[b:b + 1, : xl[b]]).log_softmax(-1)[0], 4)
            assert torch.allclose(soft[b, : xl[b]], alone, atol=1e-4)
    assert (soft[:, :4].argmax(-1) == 0).all()  # the delayed frames are blank
    inside = torch.arange(x.shape[1])[None] < xl[:, None]
    masked = batcher.mask(x)
    assert masked.shape == x.shape and not (x == 0).all(-1)[inside].any()  # the teacher's copy has no masks,
    assert (masked == 0).all(-1)[inside].any() or (masked == 0).all(1).any()  # the student's has


def test_training_from_a_pack_with_a_teacher_runs_it_online(pack, tmp_path):
    cmd = [sys.executable, "-m", "asr_core.train", "--model", "rnn", "--audio", str(pack), "--init-from", "rnn",
           "--teacher", "lstm", "--distill", "0.5", "--distill-focus", "--max-steps", "2", "--epochs", "50",
           "--batch-frames", "4000", "--eval-limit", "5", "--out-dir", str(tmp_path / "out"),
           "--ckpt-dir", str(tmp_path / "ck"), "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    t = json.loads((tmp_path / "out" / "rnn.json").read_text())["training"]
    assert t["steps"] == 2 and t["teacher"]["model"] == "lstm" and t["teacher"]["targets"].startswith("online")
    assert t["teacher"]["distill_weight"] == 0.5 and t["teacher"]["focus"] is True
