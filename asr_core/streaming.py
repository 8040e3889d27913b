"""Live transcription: feed audio chunk by chunk to a causal model that keeps its hidden state.

A unidirectional RNN/GRU computes h_t from h_{t-1} and x_t only, so it can emit o_t as soon as
frame t has arrived: carry h across chunks and the outputs are those of one pass over the
whole clip. A bidirectional LSTM also runs a second RNN from the *end* of the clip backwards;
o_t needs that backward state, which does not exist until the recording is over.

Every stage here keeps just enough of the past so chunk boundaries leave no trace:

- Resampler      the windowed-sinc resampler of torchaudio, fed a few input samples of context
                 on each side of a chunk, emits exactly the samples of a whole-clip resample.
- IncrementalMFCC keeps a tail of samples so that every 25 ms window (centred every 10 ms) sees
                 the same samples as in a whole-clip pass; a frame is emitted once its window
                 is complete. The dB floor (80 dB below the loudest frame) uses the loudest
                 frame *so far*.
- RunningNorm    the features are normalized per utterance in the offline pass; live, the mean
                 and variance are running statistics over the frames heard so far.
- Stream         ties them to the model and keeps the per-frame outputs for the transcript.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torchaudio.functional as AF

from . import features, models
from .audio import SAMPLE_RATE, resampler
from .vocab import BLANK, NUM_CLASSES, decode

HOP = features.HOP_LENGTH
MARGIN_FRAMES = 2           # 2 hops = 320 samples > half the 512-sample FFT window
LOWPASS_WIDTH, ROLLOFF = 6, 0.99   # torchaudio's resample defaults


class Resampler:
    """Chunked resampling whose output equals torchaudio's resample of the whole signal."""

    def __init__(self, orig: int, new: int = SAMPLE_RATE):
        g = math.gcd(orig, new)
        self.orig, self.new, self.o, self.n = orig, new, orig // g, new // g
        self.width = math.ceil(LOWPASS_WIDTH * self.o / (min(self.o, self.n) * ROLLOFF))
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0   # global input index of buf[0], always a multiple of self.o
        self.total_in = 0
        self.out_next = 0    # global index of the next output sample to emit

    def _emit(self, upto: int) -> np.ndarray:
        """Outputs out_next .. upto-1 from a resample of the buffer; then drop input no longer needed."""
        if upto <= self.out_next:
            return np.zeros(0, np.float32)
        y = self.buf if self.orig == self.new else resampler(self.orig, self.new)(torch.from_numpy(self.buf)).numpy()
        first = self.buf_start // self.o * self.n  # global index of y[0]
        out = y[self.out_next - first:upto - first]
        self.out_next = upto
        keep = max(self.buf_start, (self.out_next // self.n * self.o - self.width) // self.o * self.o)
        self.buf = self.buf[keep - self.buf_start:]
        self.buf_start = keep
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.total_in += len(x)
        if self.orig == self.new:
            return self._emit(self.total_in)
        # Output block s (samples s*n .. s*n+n-1) reads inputs up to s*o + width + o.
        blocks = (self.total_in - self.width - self.o) // self.o + 1
        return self._emit(max(0, blocks) * self.n)

    def flush(self) -> np.ndarray:
        """The last outputs, computed as at the end of a whole-clip resample."""
        return self._emit(math.ceil(self.n * self.total_in / self.o))


class IncrementalMFCC:
    """Raw (un-normalized) MFCC frames as samples arrive, identical to features.mfcc_transform's."""

    def __init__(self):
        self.t = features.mfcc_transform()
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0   # global sample index of buf[0], a multiple of HOP
        self.total = 0
        self.next_frame = 0
        self.db_max = -math.inf

    def _frames(self, last: int) -> torch.Tensor:
        """Frames next_frame .. last-1 from the buffer; keeps the tail the next frames need."""
        if last <= self.next_frame or len(self.buf) <= self.t.MelSpectrogram.spectrogram.n_fft // 2:
            return torch.zeros(0, features.N_MFCC)
        with torch.no_grad():
            mel = self.t.MelSpectrogram(torch.from_numpy(self.buf))   # frame j centred on buf_start + j*HOP
            j0 = self.next_frame - self.buf_start // HOP
            mel = mel[:, j0:j0 + last - self.next_frame]
            a2db = self.t.amplitude_to_DB
            db = AF.amplitude_to_DB(mel, a2db.multiplier, a2db.amin, a2db.db_multiplier, top_db=None)
            self.db_max = max(self.db_max, float(db.max()))
            db = db.clamp(min=self.db_max - a2db.top_db)
            out = db.T @ self.t.dct_mat
        self.next_frame = last
        keep = max(0, (self.next_frame - MARGIN_FRAMES) * HOP)
        self.buf = self.buf[keep - self.buf_start:]
        self.buf_start = keep
        return out

    def push(self, x: np.ndarray) -> torch.Tensor:
        self.buf = np.concatenate([self.buf, np.asarray(x, np.float32)])
        self.total += len(x)
        # Frame t is complete once samples up to t*HOP + n_fft/2 have arrived.
        last = (self.total - self.t.MelSpectrogram.spectrogram.n_fft // 2) // HOP + 1
        return self._frames(max(0, last))

    def flush(self) -> torch.Tensor:
        """The last frames, whose windows run past the end (reflect-padded as in the offline pass)."""
        return self._frames(1 + self.total // HOP)


class RunningNorm:
    """Per-coefficient mean/variance normalization with statistics of every frame so far."""

    def __init__(self, mean=None, std=None):
        self.count, self.sum, self.sumsq = 0, 0.0, 0.0
        self.fixed = None if mean is None else (torch.as_tensor(mean), torch.as_tensor(std))

    def __call__(self, raw: torch.Tensor) -> torch.Tensor:
        if self.fixed is not None:
            mean, std = self.fixed
        else:
            r = raw.double()
            self.count += r.shape[0]
            self.sum = self.sum + r.sum(0)
            self.sumsq = self.sumsq + (r * r).sum(0)
            mean = self.sum / self.count
            var = (self.sumsq - self.count * mean * mean) / max(1, self.count - 1)
            std = var.clamp(min=0).sqrt() if self.count > 1 else torch.ones_like(mean)
        return ((raw - mean) / (std + 1e-5)).float()


class Stream:
    """One live session: audio chunks in, per-frame log-probabilities and a running transcript out."""

    def __init__(self, model_name: str, norm: RunningNorm | None = None):
        self.model_name = model_name
        self.model = models.load(model_name)
        if getattr(self.model.rnn, "bidirectional", False):
            raise ValueError(f"The {model_name} model is bidirectional: each output needs the end of the "
                             "recording, so it cannot transcribe live. Pick a unidirectional model (rnn, gru).")
        self.step = models.causal_step(model_name)  # the GRU's bf16 kernel where the app uses it (models.fast)
        self.resampler: Resampler | None = None
        self.mfcc = IncrementalMFCC()
        self.norm = norm or RunningNorm()
        self.hidden = None
        self.log_probs = np.zeros((0, NUM_CLASSES), np.float32)
        self.labels: list[int] = []   # the greedy transcript so far, collapsed as frames arrive
        self._last = BLANK
        self.seconds_in = 0.0
        self.last_latency_s = 0.0

    @torch.inference_mode()
    def _run(self, raw: torch.Tensor) -> np.ndarray:
        if raw.shape[0] == 0:
            return np.zeros((0, NUM_CLASSES), np.float32)
        h, self.hidden = self.step(self.norm(raw)[None], self.hidden)
        lp = self.model.fc(h)[0].log_softmax(-1).numpy()
        self.log_probs = np.concatenate([self.log_probs, lp])
        for c in lp.argmax(axis=1).tolist():  # CTC collapse, carried across chunks: merge repeats, drop blanks
            if c != self._last and c != BLANK:
                self.labels.append(c)
            self._last = c
        return lp

    def push(self, samples, rate: int) -> np.ndarray:
        """A chunk of audio (any rate; int16 or float; mono or (n, channels)) -> its new output rows."""
        start = time.perf_counter()
        x = np.asarray(samples)
        if np.issubdtype(x.dtype, np.integer):
            x = x.astype(np.float32) / max(abs(np.iinfo(x.dtype).min), np.iinfo(x.dtype).max)
        x = np.nan_to_num(x.astype(np.float32))
        if x.ndim == 2:
            x = x.mean(axis=1)
        if self.resampler is None:
            self.resampler = Resampler(int(rate))
        self.seconds_in += len(x) / rate
        lp = self._run(self.mfcc.push(self.resampler.push(x)))
        self.last_latency_s = time.perf_counter() - start
        return lp

    def finish(self) -> np.ndarray:
        """End of the recording: the last few frames."""
        if self.resampler is None:
            return np.zeros((0, NUM_CLASSES), np.float32)
        return self._run(torch.cat([self.mfcc.push(self.resampler.flush()), self.mfcc.flush()]))

    @property
    def text(self) -> str:
        return decode(self.labels)

    @property
    def frames(self) -> int:
        return self.log_probs.shape[0]
