"""Augmentation: VTLP's frequency warp, checked against its definition and on a pure tone."""
import numpy as np
import pytest
import torch

from asr_core import augment, features
from asr_core.audio import SAMPLE_RATE


def tone(hz: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("alpha", [0.9, 0.95, 1.05, 1.1])
def test_warp_is_alpha_times_f_below_the_knee_and_keeps_nyquist(alpha):
    f = np.linspace(0, SAMPLE_RATE / 2, 2001)
    w = augment.warp_frequencies(f, alpha)
    knee = augment.VTLP_BOUNDARY_HZ * min(alpha, 1) / alpha
    below = f <= knee
    np.testing.assert_allclose(w[below], alpha * f[below])
    assert w[0] == 0 and w[-1] == pytest.approx(SAMPLE_RATE / 2)
    assert np.all(np.diff(w) > 0)  # one to one: no two frequencies land on the same place
    just_above = augment.warp_frequencies(np.array([knee + 1e-6]), alpha)[0]
    assert just_above == pytest.approx(alpha * knee, abs=1e-4)  # continuous at the knee: no jump


def test_the_warped_filterbank_at_alpha_one_is_the_apps_own():
    """The interpolation itself (not vtlp_mfcc's shortcut for alpha 1) leaves the filterbank as it was."""
    x = tone(440.0) + 0.01 * np.random.default_rng(0).standard_normal(SAMPLE_RATE).astype(np.float32)
    same = augment._warped_mfcc(1.0)
    torch.testing.assert_close(same.MelSpectrogram.mel_scale.fb, features.mfcc_transform().MelSpectrogram.mel_scale.fb)
    torch.testing.assert_close(features.mfcc(x, same), features.mfcc(x))
    assert torch.equal(augment.vtlp_mfcc(x, 1.004), features.mfcc(x))  # alpha rounds to 0.01


@pytest.mark.parametrize("hz, alpha", [(1000.0, 1.1), (1500.0, 0.9), (2500.0, 1.08)])
def test_a_warped_tone_lands_in_the_mel_band_of_alpha_times_its_frequency(hz, alpha):
    """The warped filterbank hears a tone at f where the plain one hears a tone at alpha * f."""
    warped = augment._warped_mfcc(round(alpha, 2)).MelSpectrogram(torch.from_numpy(tone(hz)))
    plain = features.mfcc_transform().MelSpectrogram(torch.from_numpy(tone(alpha * hz)))
    unwarped = features.mfcc_transform().MelSpectrogram(torch.from_numpy(tone(hz)))
    peak = lambda spec: int(spec.mean(dim=1).argmax())  # noqa: E731  (the loudest mel band over time)
    assert peak(warped) == peak(plain) != peak(unwarped)
    centroid = lambda spec: float((spec.mean(dim=1) * torch.arange(spec.shape[0])).sum() / spec.mean(dim=1).sum())  # noqa: E731
    assert abs(centroid(warped) - centroid(plain)) < 0.25 < abs(centroid(unwarped) - centroid(plain))
