"""The shipped example clips: listed, present, decodable, 16 kHz mono, each with its reference text."""
import numpy as np
import pytest
import soundfile as sf

from asr_core import audio, examples, vocab

LISTED = examples.listing()


def test_listing_matches_the_generator():
    assert [(e.name, e.voice, e.text) for e in LISTED] == [(e.name, e.voice, e.text) for e in examples.EXAMPLES]


def test_required_texts_and_voice_mix():
    texts = {e.text for e in LISTED}
    for required in ["hello world", "cat", "act", "three one four one five",
                     "the quick brown fox jumps over the lazy dog"]:
        assert required in texts
    engines = {e.voice.split(":")[0] for e in LISTED}
    assert engines == {"espeak", "flite"}
    assert len({e.voice for e in LISTED}) >= 4


@pytest.mark.parametrize("ex", LISTED, ids=[e.name for e in LISTED])
def test_example_clip(ex):
    assert ex.path.exists()
    info = sf.info(str(ex.path))
    assert (info.samplerate, info.channels, info.format) == (16000, 1, "WAV")
    clip = audio.load(str(ex.path))
    assert clip.original_rate == 16000 and clip.original_channels == 1
    assert 0.3 < clip.seconds < 12
    assert float(np.sqrt(np.mean(clip.samples ** 2))) > 0.01  # there is speech, not near-silence
    # the reference text is already in the model's vocabulary
    assert ex.text and vocab.normalize_text(ex.text) == ex.text
    assert vocab.decode(vocab.encode(ex.text)) == ex.text


@pytest.mark.parametrize("voice", ["espeak:en-us", "flite:slt"])
def test_synthesize_speaks(voice):
    data, rate = examples.synthesize(voice, "cat")
    clip = audio.prepare(data, rate)
    assert clip.samples.dtype == np.float32 and 0.2 < clip.seconds < 3
