"""The "Live" tab: transcription while you speak, with a causal model (layout, events, live figure).

    live_tab.build()        # inside the page's `with gr.Tabs():`

The browser sends the microphone in short chunks; `step` feeds each chunk to a
streaming.Stream kept in the session's gr.State (the model's hidden state, the MFCC tail, the
running normalization) and returns the transcript so far, a scrolling heatmap of the last
HEATMAP_SECONDS of softmax outputs and the time the chunk took.
"""
from __future__ import annotations

import logging

import gradio as gr
import numpy as np
import plotly.graph_objects as go

from . import models
from .features import FRAMES_PER_SECOND
from .streaming import Stream
from .vocab import NUM_CLASSES, display

STREAM_EVERY = 0.5      # asked of the browser; Gradio 6's recorder actually sends a chunk every 0.1 s
FIGURE_EVERY = 0.5      # redraw the heatmap after this much new audio (transcript and stats: every chunk)
HEATMAP_SECONDS = 6.0
TIME_LIMIT_S = 300      # one live session streams at most this long
LIVE_SESSIONS = 8       # live sessions served at once (each holds a queue slot while it streams;
                        # a chunk costs a few ms of CPU, so 8 fit on 2 cores); more users wait in line
NO_AUDIO_AFTER_S = 5.0  # after Record, this long without a single chunk means the browser's recorder did not start

# Gradio's streaming recorder loads its WAV encoder asynchronously when the microphone component is first
# shown (Tab(render_children=True) would build it with the page, but Gradio 6.31's front end ignores that).
# Record pressed before the encoder is ready starts nothing: no chunk ever arrives, and the page would
# sit at "Waiting for audio…". A watchdog timer, armed by Record, says so and what to do.
NOT_READY = ("**No audio has arrived since Record was pressed.** The browser's recorder was probably not ready "
             "yet (this happens when Record is pressed within a second of opening this tab). "
             "Press **Stop**, then **Record** again.")

EXPLAIN = """
### Live transcription
Press record and speak: every tenth of a second the browser sends the new audio, the network reads its
new frames **starting from the hidden state it had at the end of the previous chunk**, and the
transcript grows. Only a *causal* network can do this. A unidirectional RNN or GRU computes
h<sub>t</sub> from h<sub>t-1</sub> and x<sub>t</sub>, so its output o<sub>t</sub> is final as soon as
frame t has been heard. The **bidirectional LSTM** also runs a second RNN *backwards, from the end of
the recording*; its o<sub>t</sub> combines both directions, and the backward state at frame t depends on
every frame after t — which have not been spoken yet. It could only re-read everything after every
chunk (and its outputs would keep changing), or wait for the end. That is why it is not offered here.

Live, the features are normalized with the mean and variance of the frames heard **so far** (the
offline pass uses the whole clip's), so the first second can look a little different from an upload
of the same words.
"""


def causal_models() -> list[str]:
    """Shipped models that can stream (unidirectional), best first."""
    return [n for n in models.available() if not models.card(n).get("arch", {}).get("bidirectional", False)]


def live_figure(stream: Stream | None) -> go.Figure:
    """Softmax outputs of the last HEATMAP_SECONDS, newest on the right; frames on x, symbols on y."""
    keep = int(HEATMAP_SECONDS * FRAMES_PER_SECOND)
    probs = np.exp(stream.log_probs[-keep:]) if stream is not None and stream.frames else np.zeros((0, NUM_CLASSES))
    first = (stream.frames if stream is not None else 0) - len(probs)
    seconds = (first + np.arange(len(probs))) / FRAMES_PER_SECOND
    fig = go.Figure(go.Heatmap(
        z=probs.T.round(2), x=seconds, y=[display(i) for i in range(NUM_CLASSES)], zmin=0, zmax=1,
        colorscale="Blues", colorbar=dict(title="p", thickness=12),
        hovertemplate="%{x:.2f} s · %{y}: %{z:.2f}<extra></extra>"))
    end = max(seconds[-1] if len(seconds) else 0.0, HEATMAP_SECONDS)
    fig.update_layout(
        height=420, margin=dict(l=50, r=20, t=50, b=40), template="plotly_white",
        title=dict(text="<b>Network output, live</b> — one softmax column per 10 ms frame (last "
                        f"{HEATMAP_SECONDS:g} s)", x=0.01, font=dict(size=14)),
        xaxis=dict(title="time (s)", range=[end - HEATMAP_SECONDS, end]),
        yaxis=dict(title="symbol", autorange="reversed", tickfont=dict(size=10), dtick=1),
        uirevision="live",  # keep zoom and hover state between updates
    )
    return fig


def stats_markdown(stream: Stream | None) -> str:
    if stream is None or not stream.frames:
        return "Waiting for audio…"
    return (f"heard **{stream.seconds_in:.1f} s** · {stream.frames} frames · model **{stream.model_name}** · "
            f"last chunk computed in **{1000 * stream.last_latency_s:.0f} ms** "
            "(plus the browser's chunking and the network)")


def step(chunk, stream: Stream | None, model_name: str):
    """One streamed chunk (rate, samples) -> (state, transcript so far, heatmap, stats).

    The heatmap (the costly output: a figure of ~17 000 numbers) is redrawn every FIGURE_EVERY seconds
    of audio, so that chunk handling keeps up with the browser's 10 chunks per second."""
    if chunk is None:
        return stream, gr.skip(), gr.skip(), gr.skip()
    rate, samples = chunk
    try:
        if stream is None or stream.model_name != model_name:
            stream = Stream(model_name)
            stream.figure_at = -FIGURE_EVERY
        stream.push(samples, rate)
    except ValueError as e:  # a bidirectional model was asked for
        raise gr.Error(str(e), print_exception=False) from None
    except Exception:
        logging.exception("live chunk failed")
        raise gr.Error("Live transcription failed on this chunk; stop and start recording again.") from None
    figure = gr.skip()
    if stream.seconds_in - stream.figure_at >= FIGURE_EVERY:
        figure, stream.figure_at = live_figure(stream), stream.seconds_in
    return stream, stream.text, figure, stats_markdown(stream)


def finish(stream: Stream | None):
    """Recording stopped: the last frames (whose windows reach the end) and the final transcript."""
    if stream is None:
        return None, gr.skip(), gr.skip(), gr.skip()
    stream.finish()
    return None, stream.text, live_figure(stream), stats_markdown(stream) + " · stopped"


def reset():
    return None, "", live_figure(None), stats_markdown(None)


def start():
    """Record pressed: a fresh session, and the watchdog armed (it fires once, NO_AUDIO_AFTER_S later)."""
    return (*reset(), gr.Timer(active=True))


def check_audio_arrived(stream: Stream | None):
    """The watchdog: no chunk since Record (the session is still empty) -> NOT_READY; then it disarms."""
    arrived = stream is not None and stream.seconds_in > 0
    return (gr.skip() if arrived else NOT_READY), gr.Timer(active=False)


def build() -> None:
    """Add the Live tab (call inside the page's `with gr.Tabs():`)."""
    names = causal_models()
    for name in names:  # loaded now, not by the first chunk (the browser drops chunks while one is pending)
        models.load(name)
    with gr.Tab("Live", id="live"):
        gr.Markdown(EXPLAIN)
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=320):
                mic = gr.Audio(sources=["microphone"], streaming=True, type="numpy", label="Microphone (live)")
                model = gr.Radio(names, value=names[0] if names else None, label="Causal model")
            with gr.Column(scale=3, min_width=420):
                text = gr.Textbox(label="Transcript so far (greedy CTC)", lines=2, max_lines=6, interactive=False,
                                  elem_id="live-transcript", placeholder="speak after pressing record")
                stats = gr.Markdown(stats_markdown(None), elem_id="live-stats")
        heatmap = gr.Plot(live_figure(None), show_label=False)
        stream = gr.State(None)  # this session's streaming.Stream
        watchdog = gr.Timer(NO_AUDIO_AFTER_S, active=False)

    outputs = [stream, text, heatmap, stats]
    mic.start_recording(start, outputs=[*outputs, watchdog], api_visibility="private")
    watchdog.tick(check_audio_arrived, inputs=stream, outputs=[stats, watchdog], api_visibility="private")
    mic.stream(step, inputs=[mic, stream, model], outputs=outputs, stream_every=STREAM_EVERY,
               time_limit=TIME_LIMIT_S, concurrency_limit=LIVE_SESSIONS, concurrency_id="live",
               api_visibility="private")
    mic.stop_recording(finish, inputs=stream, outputs=outputs, api_visibility="private")
    mic.stop_recording(lambda: gr.Timer(active=False), outputs=watchdog, api_visibility="private")
    model.change(reset, outputs=outputs, api_visibility="private")
