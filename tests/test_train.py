"""Training really runs: a few real CTC steps on real (synthesized) speech, alone and data-parallel."""
import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest
import torch
from safetensors.torch import load_file, save_file

from asr_core import audio, ctc, data, examples, features, models, soup, train
from asr_core.data import Utterance
from asr_core.vocab import decode

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

TEXTS = ["hello world", "the cat sat", "one two three", "speech to text", "good morning", "a red apple"]


@pytest.fixture(autouse=True)
def _teacher_cache(tmp_path, monkeypatch):
    """Teacher targets computed here are kept in this test's own folder, not the user's cache."""
    monkeypatch.setattr(train, "TEACHER_CACHE", tmp_path / "teacher-cache")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    utts = []
    for i, t in enumerate(TEXTS):
        wav = d / f"u{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav), t], check=True)
        utts.append(Utterance(f"u{i}", str(wav), t, "espeak"))
    return data.write_cache(utts, d / "tiny.safetensors", augment_copies=1)


def test_cache_holds_every_clip_and_its_labels(cache):
    fs = data.FeatureSet(cache)
    assert len(fs) == 2 * len(TEXTS)  # clean + one augmented copy each
    assert sorted({decode(l.tolist()) for _, l in fs.items}) == sorted(TEXTS)
    assert all(f.shape[1] == 40 and f.shape[0] > 2 * len(l) for f, l in fs.items)


def test_a_new_augmentation_seed_writes_fresh_draws_beside_the_old_cache(cache, tmp_path, monkeypatch):
    utts = [Utterance(f"u{i}", str(cache.parent / f"u{i}.wav"), t, "espeak") for i, t in enumerate(TEXTS[:3])]
    monkeypatch.setattr(data, "FEATURES", tmp_path)
    monkeypatch.setitem(data.CORPORA, "speechocean762", lambda split: utts)
    old = data.build_cache("speechocean762", "train", 1)
    data.main(["--augment-copies", "1", "--seed", "11", "--only", "speechocean762/train"])  # the command line
    new = tmp_path / "speechocean762-train-x1s11.safetensors"
    assert old.name == "speechocean762-train-x1.safetensors" and sorted(tmp_path.iterdir()) == [old, new]
    a, b = data.FeatureSet(old).items, data.FeatureSet(new).items
    assert [l.tolist() for _, l in a] == [l.tolist() for _, l in b]
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(0, len(a), 2))  # the clean copies are the same clips
    assert not any(a[i][0].shape == b[i][0].shape and torch.equal(a[i][0], b[i][0]) for i in range(1, len(a), 2))


def test_without_dev_leaves_the_lm_tuning_speakers_out_of_the_training_cache(cache, tmp_path, monkeypatch):
    from asr_core import lm
    utts = [Utterance(f"u{i}", str(cache.parent / f"u{i}.wav"), t, f"spk{i % 3}") for i, t in enumerate(TEXTS)]
    monkeypatch.setattr(data, "FEATURES", tmp_path)
    monkeypatch.setitem(data.CORPORA, "speechocean762", lambda split: utts)
    monkeypatch.setattr(lm, "dev_speakers", lambda: ["spk1"])
    data.main(["--augment-copies", "0", "--seed", "5", "--only", "speechocean762/train", "--without-dev"])
    (made,) = tmp_path.iterdir()
    assert made.name == "speechocean762-train-x0s5-nodev.safetensors"
    kept = sorted(decode(l.tolist()) for _, l in data.FeatureSet(made).items)
    assert kept == sorted(u.text for u in utts if u.speaker != "spk1") and len(kept) == 4


def test_batches_cover_every_utterance_once_within_budget():
    import random
    lengths = [random.Random(i).randint(50, 900) for i in range(200)]
    for rng in (None, random.Random(0)):
        batches = train.make_batches(lengths, 4000, rng)
        assert sorted(i for b in batches for i in b) == list(range(200))
        assert all(max(lengths[i] for i in b) * len(b) <= 4000 or len(b) == 1 for b in batches)


def test_first_epoch_is_shortest_first_unless_sortagrad_is_off():
    import random
    lengths = [random.Random(i).randint(50, 900) for i in range(200)]
    longest = [max(lengths[i] for i in b) for b in train.make_batches(lengths, 4000, train.epoch_order(0, 3))]
    assert longest == sorted(longest)  # SortaGrad: the first epoch runs from the shortest clips to the longest
    shuffled = train.make_batches(lengths, 4000, train.epoch_order(0, 3, sortagrad=False))
    off = [max(lengths[i] for i in b) for b in shuffled]
    assert off != sorted(off) and sorted(i for b in shuffled for i in b) == list(range(200))
    # later epochs are shuffled either way, the same for the same seed and epoch (so --resume sees them again)
    again = train.make_batches(lengths, 4000, train.epoch_order(2, 3))
    assert again == train.make_batches(lengths, 4000, train.epoch_order(2, 3, sortagrad=False))
    assert again != train.make_batches(lengths, 4000, train.epoch_order(2, 4))


def _train(tmp_path, cache, *extra, launcher=()):
    cmd = [*launcher, "-m", "asr_core.train", "--model", "rnn", "--train", str(cache), "--eval", str(cache),
           "--eval-limit", "4", "--epochs", "2", "--batch-frames", "1500", "--warmup", "2", "--lr", "1e-2",
           "--out-dir", str(tmp_path / "out"), "--ckpt-dir", str(tmp_path / "ck"), "--threads", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ASR_LAB_CACHE": str(tmp_path / "cache")}  # its teacher targets too
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((tmp_path / "out" / "rnn.json").read_text()), load_file(tmp_path / "out" / "rnn.safetensors")


def test_training_lowers_the_ctc_loss_and_writes_a_card(tmp_path, cache):
    card, weights = _train(tmp_path, cache, launcher=(sys.executable,))
    assert card["parameters"] == models.parameter_count(models.SimpleASR_RNN())
    assert set(weights) == set(models.SimpleASR_RNN().state_dict())
    t = card["training"]
    assert t["steps"] > 0 and t["speed_audio_hours_per_minute"] > 0
    # a fresh run's own speed is the whole run's speed (up to the rounding and the time spent measuring)
    assert t["speed_last_run_audio_hours_per_minute"] >= t["speed_audio_hours_per_minute"] - 0.01
    assert len(card["curve"]) == 2 and all("cer_tiny" in p for p in card["curve"])


def test_distill_loss_is_the_kl_on_real_frames():
    """KL(teacher || student) per frame, by hand, averaged over the frames inside each clip's length only."""
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 29).log_softmax(-1), torch.randn(2, 5, 29).log_softmax(-1)
    lengths = torch.tensor([5, 3])
    by_hand = [(teacher[b, t].exp() * (teacher[b, t] - student[b, t])).sum() for b in range(2) for t in range(lengths[b])]
    assert torch.allclose(train.distill_loss(student, teacher, lengths), torch.stack(by_hand).mean(), atol=1e-6)
    assert train.distill_loss(teacher, teacher, lengths).abs() < 1e-6           # a perfect student: no loss
    padded = student.clone()
    padded[1, 3:] = torch.randn(2, 29).log_softmax(-1)                          # frames past clip 2's end
    assert torch.allclose(train.distill_loss(padded, teacher, lengths), train.distill_loss(student, teacher, lengths))
    # focus: each frame weighted by the teacher's probability of a character (1 - P(blank)) there
    w = [1 - teacher[b, t, 0].exp() for b in range(2) for t in range(lengths[b])]
    focused = (torch.stack(by_hand) * torch.stack(w)).sum() / torch.stack(w).sum()
    assert torch.allclose(train.distill_loss(student, teacher, lengths, focus=True), focused, atol=1e-6)
    assert torch.allclose(train.distill_loss(padded, teacher, lengths, focus=True), focused, atol=1e-6)
    sure_blank = teacher.clone()
    sure_blank[0, 0] = torch.tensor([0.0] + [-40.0] * 28)  # a frame the teacher is sure is blank adds nothing
    s2 = student.clone()
    s2[0, 0] = torch.randn(29).log_softmax(-1)
    assert torch.allclose(train.distill_loss(student, sure_blank, lengths, focus=True),
                          train.distill_loss(s2, sure_blank, lengths, focus=True), atol=1e-6)


def test_delayed_targets_answer_later_and_keep_the_length():
    """delayed(lp, d): frame t holds what frame t - d held; the first d frames say blank; T frames stay T."""
    lp = torch.randn(7, 29).log_softmax(-1)
    for d in (0, 3, 7, 20):
        out = train.delayed(lp, d)
        k = min(d, 7)
        assert out.shape == lp.shape and torch.equal(out[k:], lp[:7 - k])
        assert (out[:k].argmax(-1) == 0).all() and torch.allclose(out[:k].exp().sum(-1), torch.ones(k))
        assert (out[:k, 0].exp() > 0.999).all()


@pytest.mark.parametrize("option", [["--distill-focus"], ["--teacher-delay", "5"]])
def test_teacher_options_need_a_teacher(option, capsys):
    with pytest.raises(SystemExit):
        train.main(["--model", "rnn", *option])
    assert "--teacher" in capsys.readouterr().err


def test_the_textbook_rnn_keeps_its_one_layer(capsys):
    with pytest.raises(SystemExit):
        train.main(["--model", "rnn", "--layers", "2"])
    assert "--layers" in capsys.readouterr().err


def test_training_with_a_teacher(tmp_path, cache):
    """--teacher: the shipped GRU's outputs on each clip are a second target; the card says so."""
    card, _ = _train(tmp_path, cache, "--teacher", "gru", "--distill", "0.5", "--teacher-delay", "4",
                     "--distill-focus", launcher=(sys.executable,))
    assert card["training"]["teacher"]["model"] == "gru" and card["training"]["teacher"]["distill_weight"] == 0.5
    assert card["training"]["teacher"]["delay_frames"] == 4 and card["training"]["teacher"]["focus"] is True
    assert card["training"]["steps"] > 0 and all(p["loss"] > 0 for p in card["curve"])
    targets = train.teacher_targets("gru", data.FeatureSet(cache).items)
    assert [t.shape for t in targets] == [(f.shape[0], 29) for f, _ in data.FeatureSet(cache).items]
    assert all(torch.allclose(t.float().exp().sum(-1), torch.ones(len(t)), atol=2e-2) for t in targets)
    later = train.teacher_targets("gru", data.FeatureSet(cache).items, delay=4)
    assert all(torch.equal(b[4:], a[:-4]) and (b[:4].argmax(-1) == 0).all() for a, b in zip(targets, later))
    # a teacher that is not shipped: weights and card from a trainer's --out-dir (here a copy of the LSTM's)
    for ext in ("safetensors", "json"):
        shutil.copy(models.MODELS_DIR / f"lstm.{ext}", tmp_path / f"teacher.{ext}")
    elsewhere = train.teacher_targets(str(tmp_path / "teacher.safetensors"), data.FeatureSet(cache).items)
    assert all(torch.equal(a, b) for a, b in zip(train.teacher_targets("lstm", data.FeatureSet(cache).items), elsewhere))
    assert not all(torch.equal(a, b) for a, b in zip(targets, elsewhere))


def test_several_teachers_teach_their_renormalized_mean(tmp_path, cache):
    """--teacher A B: per frame, log_softmax of the mean of the teachers' log-probabilities, written out by hand
    here; one name gives exactly that teacher's targets; the card lists the teachers."""
    items = data.FeatureSet(cache).items
    lstm, gru = train.teacher_targets("lstm", items), train.teacher_targets("gru", items)
    both = train.ensemble_targets(["lstm", "gru"], items)
    for a, b, e in zip(lstm, gru, both):
        by_hand = (a.float() + b.float()) / 2
        by_hand = by_hand - by_hand.exp().sum(-1, keepdim=True).log()
        assert e.dtype == torch.float16 and torch.allclose(e.float(), by_hand, atol=1e-2)
        agree = a.argmax(-1) == b.argmax(-1)  # where both teachers agree, so does the mean (up to float16 ties)
        top = e.float()[agree].gather(-1, a.argmax(-1)[agree, None])[:, 0]
        assert (top >= e.float()[agree].max(-1).values - 1e-2).all()
    assert not all(torch.equal(e, a) for e, a in zip(both, lstm))
    assert all(torch.equal(a, b) for a, b in zip(train.ensemble_targets(["lstm"], items), lstm))
    card, _ = _train(tmp_path, cache, "--teacher", "lstm", "gru", "--distill", "0.5", launcher=(sys.executable,))
    assert card["training"]["teacher"]["model"] == ["lstm", "gru"] and "mean" in card["training"]["teacher"]["ensemble"]
    assert card["training"]["steps"] > 0


def test_vtlp_while_training_needs_fresh_copies_from_an_audio_pack(capsys):
    with pytest.raises(SystemExit):
        train.main(["--model", "rnn", "--vtlp"])
    err = capsys.readouterr().err
    assert "--vtlp warps the fresh copies of --audio" in err and "asr_core.data --vtlp" in err


def test_several_teachers_need_cached_features(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train.main(["--model", "rnn", "--teacher", "lstm", "gru", "--audio", str(tmp_path / "pack.safetensors")])
    assert "several teachers" in capsys.readouterr().err


def test_teacher_targets_are_kept_on_disk_and_reused(cache, monkeypatch):
    """The first run with a teacher writes its targets to TEACHER_CACHE; the next run with the same teacher, delay
    and features loads them without running the teacher; a new delay or changed features compute afresh."""
    items = data.FeatureSet(cache).items
    first = train.teacher_targets("gru", items, delay=3)
    kept = sorted(train.TEACHER_CACHE.glob("*.safetensors"))
    assert len(kept) == 1 and not list(train.TEACHER_CACHE.glob("*.partial"))
    with monkeypatch.context() as m:
        m.setattr(models, "fast", lambda *a: pytest.fail("the teacher ran although its targets were kept"))
        again = train.teacher_targets("gru", items, delay=3)
    assert len(again) == len(first) and all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(a.dtype == torch.float16 and a.shape == (f.shape[0], 29) for a, (f, _) in zip(again, items))
    train.teacher_targets("gru", items, delay=4)                       # another delay: another file
    changed = [(f.clone(), l) for f, l in items]
    changed[0][0][5, 0] += 1.0                                         # one feature of one frame differs
    fresh = train.teacher_targets("gru", changed, delay=3)
    assert len(list(train.TEACHER_CACHE.glob("*.safetensors"))) == 3
    assert not torch.equal(fresh[0], first[0]) and all(torch.equal(a, b) for a, b in zip(fresh[1:], first[1:]))
    train.teacher_targets("gru", items, delay=5, keep=False)           # keep=False writes nothing
    assert len(list(train.TEACHER_CACHE.glob("*.safetensors"))) == 3


def test_same_seed_same_weights_and_resume_continues(tmp_path, cache):
    _, a = _train(tmp_path / "a", cache, launcher=(sys.executable,))
    _, b = _train(tmp_path / "b", cache, launcher=(sys.executable,))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # stop after 3 steps, then resume: same final weights as the uninterrupted run
    _train(tmp_path / "c", cache, "--max-steps", "3", launcher=(sys.executable,))
    shutil.copytree(tmp_path / "c" / "ck", tmp_path / "d" / "ck")
    _, d = _train(tmp_path / "d", cache, "--resume", launcher=(sys.executable,))
    assert all(torch.allclose(a[k], d[k], atol=1e-6) for k in a)


def test_bf16_training_takes_the_same_steps_in_bfloat16(tmp_path, cache):
    """--bf16 runs the network under autocast: the same seed's 3 steps land near, but not on, the float32 run's
    weights (bf16 rounding really happened), the weights stay float32, and the card says how it was trained."""
    _, start = _train(tmp_path / "s", cache, "--max-steps", "1", "--lr", "0", launcher=(sys.executable,))
    _, f32 = _train(tmp_path / "a", cache, "--max-steps", "3", launcher=(sys.executable,))
    card, b16 = _train(tmp_path / "b", cache, "--max-steps", "3", "--bf16", launcher=(sys.executable,))
    assert card["training"]["options"]["bf16"] is True and "--bf16" in card["training"]["command"]
    assert all(b16[k].dtype == torch.float32 for k in b16)
    assert not all(torch.equal(f32[k], b16[k]) for k in f32)
    for k in f32:   # each tensor's bf16 update is close to its float32 update
        moved = (f32[k] - start[k]).norm()
        assert (b16[k] - f32[k]).norm() <= 0.25 * moved + 1e-6, k


def test_data_parallel_two_cpu_processes(tmp_path, cache):
    # --standalone: torchrun's own rendezvous on a port it picks itself (a port picked here, then freed, can be
    # taken by someone else before torchrun binds it)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    card, weights = _train(tmp_path, cache, launcher=torchrun)
    assert "world 2" in card["training"]["hardware"]
    assert card["training"]["steps"] > 0


def test_a_deeper_lstm_starts_where_the_shallow_one_stood(example_wavs):
    """models.deepened: the shipped LSTM plus one near-identity top layer hears a real clip as the LSTM does
    (Net2DeeperNet), so training the deeper model starts from the trained one, not from scratch."""
    shallow = models.load("lstm")
    arch = dict(models.card("lstm")["arch"], num_layers=shallow.rnn.num_layers + 1)
    deep = models.build({"arch": arch})
    deep.load_state_dict(models.deepened(load_file(models.MODELS_DIR / "lstm.safetensors"), arch))  # strict: all keys
    assert models.parameter_count(deep) > models.parameter_count(shallow)
    feats = features.mfcc(audio.load(str(max(example_wavs, key=lambda p: p.stat().st_size))).samples)[None]
    with torch.no_grad():
        a, b = shallow(feats).softmax(-1), deep.eval()(feats).softmax(-1)
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.99
    assert (a - b).abs().max() < 0.1
    # a fresh top layer with random weights is another model entirely
    fresh = models.build({"arch": arch}).eval()
    fresh.load_state_dict({**load_file(models.MODELS_DIR / "lstm.safetensors"),
                           **{k: v for k, v in fresh.state_dict().items() if f"_l{arch['num_layers'] - 1}" in k}})
    with torch.no_grad():
        assert (a.argmax(-1) == fresh(feats).argmax(-1)).float().mean() < 0.9


def test_the_committed_teacher_is_a_deeper_lstm_that_hears_the_examples():
    """assets/teachers/lstm3: the 3-layer LSTM the GRU learnt from in docs/training-log.md's ninth round (trained on
    since, in the fourth GPU session, stored as float16), kept in git (earlier teachers were lost with their machines) for
    --teacher, and kept out of the app's models (too slow for it)."""
    path = models.MODELS_DIR.parent / "teachers" / "lstm3.safetensors"
    teacher = train.teacher_model(str(path))
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["arch"]["num_layers"] == 3 and card["arch"]["bidirectional"]
    assert models.parameter_count(teacher) == card["parameters"] <= 5_000_000
    assert "lstm3" not in models.available()
    refs, hyps = [], []
    for example in examples.listing():
        feats = features.mfcc(audio.load(str(example.path)).samples)[None]
        with torch.no_grad():
            hyps.append(ctc.greedy(teacher(feats)[0].log_softmax(-1)).text)
        refs.append(example.text)
    assert jiwer.cer(refs, hyps) < 0.3, list(zip(refs, hyps))  # 0.217 measured (0.21 before the GPU round); untrained ~1.0
    assert "three one four one five" in hyps


def test_train_grows_an_lstm_given_more_layers_than_its_weights(tmp_path, cache):
    layers = models.card("lstm")["arch"]["num_layers"] + 1
    cmd = [sys.executable, "-m", "asr_core.train", "--model", "lstm", "--layers", str(layers), "--init-from", "lstm",
           "--train", str(cache), "--eval", str(cache), "--eval-limit", "2", "--max-steps", "1", "--warmup", "1000",
           "--batch-frames", "1500", "--out-dir", str(tmp_path), "--ckpt-dir", str(tmp_path / "ck"), "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    card, weights = json.loads((tmp_path / "lstm.json").read_text()), load_file(tmp_path / "lstm.safetensors")
    assert card["arch"]["num_layers"] == layers and card["training"]["options"]["layers"] == layers
    shipped = load_file(models.MODELS_DIR / "lstm.safetensors")
    assert torch.allclose(weights["rnn.weight_hh_l0"], shipped["rnn.weight_hh_l0"], atol=1e-3)  # one warm-up step
    # the grown layer started from models.deepened (no recurrence yet), not from nn.LSTM's random init (~0.06)
    assert weights[f"rnn.weight_hh_l{layers - 1}_reverse"].abs().max() < 1e-3


def test_every_gpu_round_file_holds_candidates_the_trainer_accepts(capsys):
    """scripts/gpu/round*.txt are run unattended on a lent GPU (scripts/gpu_train.sh): a typo there would cost a
    candidate's whole share of the device's 15 minutes, so each line must parse as train's own command line."""
    rounds = sorted((Path(__file__).parents[1] / "scripts" / "gpu").glob("round*.txt"))
    assert len(rounds) >= 2
    for f in rounds:
        lines = [l for l in f.read_text().splitlines() if l.strip() and not l.startswith("#")]
        assert lines, f
        for line in lines:
            name, *opts = line.split()
            args = train.parse_args(["--audio", "pack.safetensors", "--name", name, *opts])
            assert args.model in train.ARCHS and args.name == name
            assert args.config is None or (Path(__file__).parents[1] / args.config).exists()
    with pytest.raises(SystemExit):  # what a typo looks like
        train.parse_args(["--audio", "pack.safetensors", "--model", "lstm", "--distil", "1.0"])
    assert "--distil" in capsys.readouterr().err


def test_soup_averages_two_runs_into_a_shipped_model_and_its_card(tmp_path, cache):
    """Two runs from the shipped RNN (different seeds) -> `python -m asr_core.soup A B --into rnn`: the shipped
    weights become their tensor-by-tensor mean, the card keeps its story and gains a round naming both runs."""
    runs = {}
    for seed in ("1", "2"):
        card, weights = _train(tmp_path / seed, cache, "--init-from", "rnn", "--seed", seed, "--max-steps", "3",
                               launcher=(sys.executable,))
        runs[seed] = tmp_path / seed / "out" / "rnn.safetensors", card, weights
    assert "--seed 1" in runs["1"][1]["training"]["command"]
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for ext in ("safetensors", "json"):
        shutil.copy(models.MODELS_DIR / f"rnn.{ext}", shipped / f"rnn.{ext}")
    before = json.loads((shipped / "rnn.json").read_text())
    r = subprocess.run([sys.executable, "-m", "asr_core.soup", str(runs["1"][0]), str(runs["2"][0]), "--into", "rnn",
                        "--out-dir", str(shipped)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    souped = load_file(shipped / "rnn.safetensors")
    a, b = runs["1"][2], runs["2"][2]
    assert not torch.equal(a["rnn.weight_hh_l0"], b["rnn.weight_hh_l0"])   # the seeds really trained apart
    assert all(torch.allclose(souped[k], (a[k] + b[k]) / 2, atol=1e-7) for k in a)
    card = json.loads((shipped / "rnn.json").read_text())
    assert card["metrics"] == before["metrics"] and card["fine_tuning"][:-1] == before["fine_tuning"]
    new = card["fine_tuning"][-1]
    assert new["round"] == before["fine_tuning"][-1]["round"] + 1 and new["init_from"] == "rnn"
    assert [run["options"]["seed"] for run in new["runs"]] == [1, 2] and all(run["curve"] for run in new["runs"])
    assert new["audio_hours_seen"] == pytest.approx(sum(runs[s][1]["training"]["audio_hours_seen"] for s in runs))
    # the averaged model is a working model: one 29-way distribution per MFCC frame
    x = data.FeatureSet(cache).items[0][0].float()[None]
    assert models.load("rnn", shipped)(x).shape == (1, x.shape[1], 29)
    # one run is adopted as it is
    soup.adopt([runs["1"][0]], "rnn", shipped, note="one run")
    assert all(torch.equal(load_file(shipped / "rnn.safetensors")[k], a[k]) for k in a)
    last = json.loads((shipped / "rnn.json").read_text())["fine_tuning"][-1]
    assert last["command"] == runs["1"][1]["training"]["command"] and last["note"] == "one run"
    assert "note" not in new
    # --with-shipped: the weights shipped now (run 1's) are one more ingredient beside run 2
    soup.adopt([runs["2"][0]], "rnn", shipped, with_shipped=True)
    assert all(torch.allclose(load_file(shipped / "rnn.safetensors")[k], (a[k] + b[k]) / 2, atol=1e-7) for k in a)
    halfway = json.loads((shipped / "rnn.json").read_text())["fine_tuning"][-1]
    assert halfway["round"] == last["round"] + 1 and f"card round {last['round']}" in halfway["weights"]
    with pytest.raises(ValueError, match="no rnn.safetensors"):
        soup.adopt([runs["2"][0]], "rnn", tmp_path / "empty", with_shipped=True)


def test_soup_refuses_runs_that_do_not_fit_together(tmp_path):
    for ext in ("safetensors", "json"):
        shutil.copy(models.MODELS_DIR / f"rnn.{ext}", tmp_path / f"rnn.{ext}")
    with pytest.raises(ValueError, match="architecture"):   # the GRU's weights are no run of the RNN
        soup.adopt([models.MODELS_DIR / "gru.safetensors"], "rnn", tmp_path)
    assert (tmp_path / "rnn.safetensors").read_bytes() == (models.MODELS_DIR / "rnn.safetensors").read_bytes()  # untouched
    assert torch.equal(soup.average([{"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}])["w"],
                       torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match="shapes"):
        soup.average([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="different tensors"):
        soup.average([{"w": torch.zeros(2)}, {"v": torch.zeros(2)}])


def test_soup_adopts_a_run_trained_with_more_dropout_and_its_round_says_so(tmp_path):
    """Dropout changes how a model trains, not its weights' shapes or what it computes in eval mode: a GRU run
    trained with dropout 0.3 (the training log's fourth GPU session) is adopted into the shipped GRU (card: 0.1), the
    card's architecture stays, and the new round records the rate; a different width is still refused."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for ext in ("safetensors", "json"):
        shutil.copy(models.MODELS_DIR / f"gru.{ext}", shipped / f"gru.{ext}")
    before = json.loads((shipped / "gru.json").read_text())
    assert before["arch"]["dropout"] != 0.3
    weights = {k: v + 0.01 for k, v in load_file(models.MODELS_DIR / "gru.safetensors").items()}
    run_card = {**before, "name": "gru_d3", "arch": {**before["arch"], "dropout": 0.3}}
    save_file(weights, tmp_path / "gru_d3.safetensors")
    (tmp_path / "gru_d3.json").write_text(json.dumps(run_card))
    card = soup.adopt([tmp_path / "gru_d3.safetensors"], "gru", shipped)
    assert card["arch"] == before["arch"] and card["fine_tuning"][-1]["dropout"] == 0.3
    assert card["fine_tuning"][:-1] == before["fine_tuning"]
    adopted = load_file(shipped / "gru.safetensors")
    assert all(torch.equal(adopted[k], weights[k]) for k in weights)
    wide = {**run_card, "arch": {**run_card["arch"], "hidden_size": 384}}
    (tmp_path / "gru_d3.json").write_text(json.dumps(wide))
    with pytest.raises(ValueError, match="architecture"):
        soup.adopt([tmp_path / "gru_d3.safetensors"], "gru", shipped)


def test_soup_round_keeps_each_runs_teacher_where_the_runs_differ():
    """A round states a start or teacher once only when all its runs share it; a run without a teacher souped
    with a self-distilled one keeps each run's own teacher in its entry (nothing is silently dropped)."""
    def card(name, teacher, seed):
        return {"name": name, "curve": [{"step": 1, "loss": 1.0}],
                "training": {"init_from": "lstm", "teacher": teacher, "options": {"seed": seed},
                             "audio_hours_seen": 60.0, "minutes": 90.0}}
    kd = {"model": "lstm", "distill_weight": 0.5, "delay_frames": 0, "focus": True}
    mixed = soup.round_entry([card("A", None, 1), card("B", kd, 2)], 11)
    assert mixed["init_from"] == "lstm" and "teacher" not in mixed
    assert [(r["name"], r["teacher"]) for r in mixed["runs"]] == [("A", None), ("B", kd)]
    assert all("init_from" not in r for r in mixed["runs"]) and mixed["audio_hours_seen"] == 120.0
    same = soup.round_entry([card("A", kd, 1), card("B", kd, 2)], 11)
    assert same["teacher"] == kd and all("teacher" not in r for r in same["runs"])
    assert [r["options"]["seed"] for r in same["runs"]] == [1, 2]


def test_vtlp_draws_warp_only_the_augmented_copies_and_are_named_apart(cache, tmp_path, monkeypatch):
    utts = [Utterance(f"u{i}", str(cache.parent / f"u{i}.wav"), t, "espeak") for i, t in enumerate(TEXTS[:3])]
    monkeypatch.setattr(data, "FEATURES", tmp_path)
    monkeypatch.setitem(data.CORPORA, "speechocean762", lambda split: utts)
    plain = data.build_cache("speechocean762", "train", 1, seed=14)
    data.main(["--augment-copies", "1", "--seed", "14", "--vtlp", "--only", "speechocean762/train"])
    warped = tmp_path / "speechocean762-train-x1s14-vtlp.safetensors"
    assert set(tmp_path.iterdir()) == {plain, warped}
    a, b = data.FeatureSet(plain).items, data.FeatureSet(warped).items
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(0, len(a), 2))  # clean copies untouched
    # the augmented copies are the same waveform draws (same length), seen through a warped filterbank
    assert all(a[i][0].shape == b[i][0].shape and not torch.equal(a[i][0], b[i][0]) for i in range(1, len(a), 2))
    # a wider range is a cache of its own: the same waveform draws, warped by other factors
    data.main(["--augment-copies", "1", "--seed", "14", "--vtlp", "0.85", "1.15", "--only", "speechocean762/train"])
    wide = tmp_path / "speechocean762-train-x1s14-vtlp0.85-1.15.safetensors"
    assert set(tmp_path.iterdir()) == {plain, warped, wide}
    c = data.FeatureSet(wide).items
    assert all(torch.equal(a[i][0], c[i][0]) for i in range(0, len(a), 2))
    assert all(a[i][0].shape == c[i][0].shape and not torch.equal(b[i][0], c[i][0]) for i in range(1, len(a), 2))


@pytest.mark.parametrize("argv, want", [([], None), (["--vtlp"], (0.9, 1.1)), (["--vtlp", "0.85", "1.15"], (0.85, 1.15)),
                                        (["--vtlp", "1.1"], "no numbers (the default range) or two"),
                                        (["--vtlp", "1.2", "0.8"], "want 0.5 < LOW <= HIGH < 2")])
def test_the_vtlp_range_is_the_default_two_bounds_or_refused(argv, want, capsys):
    """--vtlp [LOW HIGH] means the same in asr_core.data (cached draws) and asr_core.train (fresh copies)."""
    p = argparse.ArgumentParser()
    data.add_vtlp_argument(p, "warp", "")
    for parse in (lambda a: data.vtlp_range(p, p.parse_args(a).vtlp),
                  lambda a: train.parse_args(["--model", "rnn", "--audio", "pack.ogg", *a]).vtlp):
        if isinstance(want, str):
            with pytest.raises(SystemExit):
                parse(argv)
            assert want in capsys.readouterr().err
        else:
            assert parse(argv) == want


def test_ema_writes_the_average_of_the_steps_and_the_last_step_beside_it(tmp_path, cache):
    """--ema 0.5 over three steps, by hand: avg = w1, then 0.5 avg + 0.5 w2, then 0.5 avg + 0.5 w3, where w1..w3
    are the same seed's weights after 1, 2 and 3 steps (runs stopped there); the last step's own weights are
    written beside the average as rnn-raw, and a resumed run carries the average (and the curve) on from its checkpoint."""
    w = [_train(tmp_path / f"s{k}", cache, "--max-steps", str(k), launcher=(sys.executable,))[1] for k in (1, 2, 3)]
    card, avg = _train(tmp_path / "ema", cache, "--max-steps", "3", "--ema", "0.5", launcher=(sys.executable,))
    raw = load_file(tmp_path / "ema" / "out" / "rnn-raw.safetensors")
    for k in w[0]:
        assert torch.allclose(avg[k], 0.25 * w[0][k] + 0.25 * w[1][k] + 0.5 * w[2][k], atol=1e-6)
        assert torch.equal(raw[k], w[2][k])
    assert not all(torch.allclose(avg[k], w[2][k], atol=1e-4) for k in avg)  # the average is not the last step
    assert card["training"]["ema"]["decay"] == 0.5 and card["training"]["ema"]["steps_averaged"] == 3
    assert all({"cer_tiny", "cer_tiny_raw"} <= set(p) for p in card["curve"])
    assert json.loads((tmp_path / "ema" / "out" / "rnn-raw.json").read_text())["name"] == "rnn-raw"
    # stop after 2 steps (here an epoch's last batch), then resume to 3: the same average as the uninterrupted run
    _train(tmp_path / "r", cache, "--max-steps", "2", "--ema", "0.5", launcher=(sys.executable,))
    again, resumed = _train(tmp_path / "r", cache, "--max-steps", "3", "--ema", "0.5", "--resume", launcher=(sys.executable,))
    assert all(torch.allclose(avg[k], resumed[k], atol=1e-6) for k in avg)
    untimed = lambda curve: [{k: v for k, v in point.items() if k != "minutes"} for point in curve]
    assert untimed(again["curve"]) == untimed(card["curve"])  # measured where it stopped, not again on resuming


def test_a_run_checkpointed_without_ema_starts_its_average_where_it_resumes(tmp_path, cache):
    _, w3 = _train(tmp_path / "s3", cache, "--max-steps", "3", launcher=(sys.executable,))
    _train(tmp_path / "r", cache, "--max-steps", "2", launcher=(sys.executable,))
    card, avg = _train(tmp_path / "r", cache, "--max-steps", "3", "--ema", "0.5", "--resume", launcher=(sys.executable,))
    assert card["training"]["ema"]["steps_averaged"] == 1  # only the step after the resume: the average is that step
    assert all(torch.allclose(avg[k], w3[k], atol=1e-6) for k in w3)


@pytest.mark.parametrize("decay", ["1", "-0.1"])
def test_ema_decay_must_be_below_one(decay, capsys):
    with pytest.raises(SystemExit):
        train.parse_args(["--model", "rnn", "--ema", decay])
    assert "--ema" in capsys.readouterr().err
