"""Stages 1 and 2: any clip becomes 16 kHz mono float32, then a 40 x T MFCC matrix with T ≈ 100 per second."""
import subprocess

import numpy as np
import pytest
import soundfile as sf

from asr_core import audio, features


def tile(samples: np.ndarray, n: int) -> np.ndarray:
    """Repeat a clip until it is exactly n samples long."""
    return np.resize(samples, n).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.25, 1.0, 2.5, 6.0])
def test_mfcc_is_40_by_T_with_100_frames_per_second(speech_clip, seconds):
    n = int(seconds * audio.SAMPLE_RATE)
    feats = features.mfcc(tile(speech_clip.samples, n))
    T = feats.shape[0]
    assert feats.shape == (T, 40)
    assert T == 1 + n // features.HOP_LENGTH  # one frame every 10 ms, centred windows
    assert abs(T - 100 * seconds) <= 1
    assert np.isfinite(feats.numpy()).all()
    assert len(features.frame_times(T)) == T
    assert features.frame_times(T)[1] == pytest.approx(0.01)


def test_mfcc_is_normalized_per_utterance(speech_clip):
    feats = features.mfcc(speech_clip.samples).numpy()
    assert np.allclose(feats.mean(axis=0), 0, atol=1e-4)
    assert np.allclose(feats.std(axis=0, ddof=1), 1, atol=1e-3)


@pytest.fixture(scope="module")
def resampled(speech_wav, tmp_path_factory):
    """The espeak clip (22.05 kHz) converted by ffmpeg to 8, 16, 44.1 and 48 kHz WAV files."""
    out = tmp_path_factory.mktemp("rates")
    paths = {}
    for rate in [8000, 16000, 44100, 48000]:
        paths[rate] = out / f"clip_{rate}.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(speech_wav), "-ar", str(rate),
                        str(paths[rate])], check=True, timeout=60)
    return paths


@pytest.mark.parametrize("rate", [8000, 44100, 48000])
def test_resampling_to_16k_keeps_length_and_mfccs(resampled, rate):
    ref = audio.load(str(resampled[16000]))
    clip = audio.load(str(resampled[rate]))
    assert clip.original_rate == rate and ref.original_rate == 16000
    assert abs(len(clip.samples) - len(ref.samples)) <= 2  # the same duration, to within rounding
    f, f_ref = features.mfcc(clip.samples).numpy(), features.mfcc(ref.samples).numpy()
    assert abs(len(f) - len(f_ref)) <= 1
    n = min(len(f), len(f_ref))
    f, f_ref = f[:n], f_ref[:n]
    if rate > 16000:
        # Both hold everything below 8 kHz: the features agree closely (they are in units of one std).
        assert np.abs(f - f_ref).mean() < 0.05
        assert np.corrcoef(f.ravel(), f_ref.ravel())[0, 1] > 0.99
    else:
        # 8 kHz audio has nothing above 4 kHz, so only the envelope (the first 13 coefficients) matches.
        assert np.corrcoef(f[:, :13].ravel(), f_ref[:, :13].ravel())[0, 1] > 0.75


def test_stereo_downmix(speech_clip):
    mono = speech_clip.samples
    same = audio.prepare(np.stack([mono, mono], axis=1), audio.SAMPLE_RATE)
    assert same.original_channels == 2
    np.testing.assert_allclose(same.samples, audio.prepare(mono, audio.SAMPLE_RATE).samples, atol=1e-6)

    # A dead channel must not halve the level: the result is the live channel alone.
    one_silent = audio.prepare(np.stack([np.zeros_like(mono), mono], axis=1), audio.SAMPLE_RATE)
    np.testing.assert_allclose(one_silent.samples, audio.prepare(mono, audio.SAMPLE_RATE).samples, atol=1e-6)

    # Two different live channels are averaged; (channels, n) arrays are accepted too.
    mixed = audio.prepare(np.stack([mono, 0.5 * mono]), audio.SAMPLE_RATE)
    np.testing.assert_allclose(mixed.samples, audio.prepare(0.75 * mono, audio.SAMPLE_RATE).samples, atol=1e-6)


def test_stereo_file_is_read_as_two_channels(speech_clip, tmp_path):
    path = tmp_path / "stereo.wav"
    quiet_right = np.stack([speech_clip.samples, np.zeros_like(speech_clip.samples)], axis=1)
    sf.write(path, quiet_right, 44100, subtype="PCM_16")
    clip = audio.load(str(path))
    assert clip.original_channels == 2 and clip.original_rate == 44100
    assert clip.samples.ndim == 1 and clip.samples.dtype == np.float32


@pytest.mark.parametrize("dtype, atol", [(np.int16, 1e-4), (np.int32, 1e-6), (np.float64, 1e-6), (np.uint8, 1e-2)])
def test_integer_and_float_inputs_give_the_same_samples(speech_clip, dtype, atol):
    x = speech_clip.samples.astype(np.float64) * 0.9
    if dtype == np.uint8:
        data = np.round(x * 127 + 128).astype(np.uint8)
    elif np.issubdtype(dtype, np.integer):
        data = np.round(x * np.iinfo(dtype).max).astype(dtype)
    else:
        data = x.astype(dtype)
    expected = audio.prepare(x.astype(np.float32), audio.SAMPLE_RATE).samples
    got = audio.prepare(data, audio.SAMPLE_RATE)
    assert got.samples.dtype == np.float32
    np.testing.assert_allclose(got.samples, expected, atol=atol)


def test_empty_clip_is_refused():
    with pytest.raises(audio.AudioError, match="empty"):
        audio.prepare(np.zeros(0, dtype=np.float32), audio.SAMPLE_RATE)


def test_50_ms_clip_is_refused(speech_clip):
    with pytest.raises(audio.AudioError, match="50 ms"):
        audio.prepare(speech_clip.samples[: audio.SAMPLE_RATE // 20], audio.SAMPLE_RATE)


@pytest.mark.parametrize("level", [0.0, 1e-6])
def test_silence_is_refused(level):
    rng = np.random.default_rng(0)
    with pytest.raises(audio.AudioError, match="silent"):
        audio.prepare(level * rng.standard_normal(audio.SAMPLE_RATE), audio.SAMPLE_RATE)


def test_non_audio_file_is_refused_with_a_readable_message(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not a recording\n")
    with pytest.raises(audio.AudioError) as err:
        audio.load(str(path))
    assert "could not be read as audio" in str(err.value)


def test_nan_samples_are_replaced_and_noted(speech_clip):
    x = speech_clip.samples.copy()
    x[100:200] = np.nan
    clip = audio.prepare(x, audio.SAMPLE_RATE)
    assert np.isfinite(clip.samples).all()
    assert any("NaN" in note for note in clip.notes)
