"""The shipped example clips: listed, present, decodable, 16 kHz mono, each with its reference text;
and the folder that caches the page's outputs for them (keyed by the weights, clips and code)."""
import os
import subprocess
import sys
import time

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


# -- the cache of the page's example outputs ------------------------------------------------------------

def test_cache_inputs_cover_the_weights_cards_clips_and_code():
    inputs = set(examples.cache_inputs())
    shipped = [*(examples.REPO / "assets" / "models").glob("*.safetensors"),
               *(examples.REPO / "assets" / "models").glob("*.json"), examples.LISTING, *(e.path for e in LISTED),
               examples.REPO / "app.py", examples.REPO / "asr_core" / "views.py"]
    assert len(shipped) > 4 and set(shipped) <= inputs


def test_cache_key_changes_when_a_weights_file_changes(tmp_path):
    weights = sorted((examples.REPO / "assets" / "models").glob("*.safetensors"))[0]
    files = [tmp_path / weights.name, tmp_path / LISTED[0].path.name]
    for f, src in zip(files, [weights, LISTED[0].path]):
        f.write_bytes(src.read_bytes())
    key = examples.cache_key(files, "rows")
    assert key == examples.cache_key(files, "rows")
    assert key != examples.cache_key(files, "other rows")
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    files[0].write_bytes(bytes(data))
    assert examples.cache_key(files, "rows") != key
    data[len(data) // 2] ^= 1
    files[0].write_bytes(bytes(data))
    assert examples.cache_key(files, "rows") == key


def fill(folder, indices):
    (folder / "7").mkdir(parents=True, exist_ok=True)
    (folder / "7" / "indices.csv").write_text("".join(f"{i}\n" for i in indices))


def dead_pid() -> int:
    """The id of a process that has exited."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout)


def test_cache_dir_has_one_writer(tmp_path):
    shared = examples.cache_dir("rows", 2, root=tmp_path)  # nobody owns it: this process fills it
    assert shared.parent == tmp_path and (shared / examples.OWNER_FILE).read_text() == str(os.getpid())
    assert examples.cache_dir("rows", 2, root=tmp_path) == shared
    assert examples.cache_dir("other rows", 2, root=tmp_path) != shared

    (shared / examples.OWNER_FILE).write_text(str(os.getppid()))  # another live process is filling it
    fill(shared, [0])
    own = examples.cache_dir("rows", 2, root=tmp_path)
    assert own != shared and own.parent == tmp_path and str(os.getpid()) in own.name
    assert (shared / "7" / "indices.csv").exists()  # left alone

    fill(shared, [0, 1])  # complete: everyone reads it
    assert examples.cache_dir("rows", 2, root=tmp_path) == shared

    (shared / examples.OWNER_FILE).write_text(str(dead_pid()))  # its owner died half-way: start again
    fill(shared, [1])
    assert examples.cache_dir("rows", 2, root=tmp_path) == shared
    assert not (shared / "7").exists() and (shared / examples.OWNER_FILE).read_text() == str(os.getpid())


def test_cache_dir_removes_folders_of_gone_processes_and_unused_keys(tmp_path):
    gone = tmp_path / f"examples-0123456789abcdef-pid{dead_pid()}"
    unused, recent = tmp_path / "examples-00000000000000aa", tmp_path / "examples-00000000000000bb"
    for folder in (gone, unused, recent):
        folder.mkdir()
    day_ago = time.time() - examples.UNUSED_CACHE_S - 60
    os.utime(unused, (day_ago, day_ago))
    examples.cache_dir("rows", 1, root=tmp_path)
    assert not gone.exists() and not unused.exists() and recent.exists()
