"""RNN speech lab — the page. Run `python app.py` and open http://127.0.0.1:7860.

This file only lays out the page and wires events; every computation lives in asr_core/
(pipeline.analyse does the work, views.* draws it).

Adding a tab (teaching views reuse the analysis instead of recomputing it):

    with gr.Tab("My view", id="my-view"):          # inside `with gr.Tabs():` below
        my_plot = gr.Plot()
    analysis.change(my_module.my_view, inputs=analysis, outputs=my_plot)

`analysis` is a gr.State holding the asr_core.pipeline.Analysis of the clip analysed last — the
whole clip: clip, model_name, feats (T,40), log_probs (T,29), best_path, .text, .probs, .frames.
It is None before the first clip and after the recorder is cleared, so a tab's function must
accept None (return empty views). For clips longer than longform.VIEW_SECONDS draw a window
(longform.window(analysis, start_s)), as views.detail_views does for the first tab.
Inputs that change how a clip is analysed (e.g. a decoder selector) go into ANALYSE_INPUTS and
become extra (defaulted) parameters of analyse(); give them a value in the example `rows` too (the
examples' outputs are cached, computed with the values their rows set).
"""
from __future__ import annotations

import logging
import math

import gradio as gr
import torch

from asr_core import beam, examples, live_tab, longform, pipeline, teaching_tabs, views
from asr_core.audio import AudioError

INTRO = """
# RNN speech lab
Speak into the microphone (or upload a clip, or pick an example) and watch a recurrent network hear it.
The sound is cut into **10 ms frames**, each described by **40 MFCC numbers**; the RNN reads those columns
one after another and, at every frame, outputs a probability for each of **29 symbols**
(a–z, space, apostrophe and the CTC *blank*, drawn as **·**). **CTC decoding** then takes the best symbol per frame,
merges repeats and drops the blanks — and what is left is the transcript. The panels follow the sound
from top to bottom: waveform → MFCC features → network output → CTC collapse. Play the clip and a cursor
follows it through the panels; click a panel to move the player there.
"""

CSS = """
#transcript textarea {font-size: 1.6rem !important; line-height: 1.35; font-family: ui-monospace, Menlo, Consolas, monospace}
#info {min-height: 1.5em}
.gradio-container {max-width: 1400px !important}
"""
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="orange", neutral_hue="slate",
                       font=[gr.themes.Font(f) for f in ("Inter", "ui-sans-serif", "system-ui", "sans-serif")])

NO_AUDIO = "No audio yet: record with the microphone or upload a clip, then press Analyse."


def analyse(audio_path: str | None, model_name: str | None = None, decoder: str = "greedy"):
    """Analyse one clip. Returns the transcript FIRST (the /transcribe API result), then every panel.
    decoder "beam" changes only the transcript (prefix beam search + LM); the panels show the greedy path."""
    if not audio_path:
        raise gr.Error(NO_AUDIO, print_exception=False)
    try:
        a = pipeline.transcribe_file(audio_path, model_name or None)
    except AudioError as e:
        raise gr.Error(str(e), print_exception=False) from None  # the user's clip, not a bug: no traceback
    except Exception:
        logging.exception("analysis failed for %s", audio_path)
        raise gr.Error("Something went wrong while analysing this clip; please try another one.") from None
    latest = math.floor(longform.max_start(a) * 10) / 10  # the slider's last start, on its 0.1 s grid
    window = gr.Slider(value=0, maximum=max(latest, 0.1), visible=views.needs_window(a))
    text = a.text if decoder == "greedy" else beam.decode(a.log_probs, decoder, a.model_name)
    return (text, views.info_markdown(a), views.lengths_figure(a), *views.detail_views(a), a, window)


def example_views(audio_path, model_name=None, decoder="greedy"):
    """What an example click shows, cached by gr.Examples: analyse() without the `analysis` state."""
    *shown, _, window = analyse(audio_path, model_name, decoder)
    return (*shown, window)


def example_analysis(example):
    """An example was clicked: fill `analysis` for the teaching tabs (the views themselves come from the cache).
    `example` is (row index, [clip path, model, decoder]) as listed in gr.Examples."""
    _, (path, model_name, _) = example
    return pipeline.transcribe_file(path, model_name)


def reanalyse(audio_path, model_name=None, decoder="greedy"):
    """The model or decoder changed: analyse the current clip again, if there is one."""
    if not audio_path:
        return [gr.skip()] * len(ANALYSE_OUTPUTS)
    return analyse(audio_path, model_name, decoder)


def show_window(a, start_s):
    """Long clips: redraw the detailed views for another stretch, from the stored analysis."""
    return views.detail_views(a, start_s) if a is not None else [gr.skip()] * 4


def clear():
    return "", "", None, None, None, None, "", None, gr.Slider(value=0, visible=False)


with gr.Blocks(title="RNN speech lab") as demo:
    gr.Markdown(INTRO)
    analysis = gr.State(None)  # pipeline.Analysis of the last clip (see the note at the top)
    with gr.Tabs():
        with gr.Tab("Listen & analyse", id="analyse"):
            with gr.Row(equal_height=False):
                with gr.Column(scale=2, min_width=340):
                    # the browser's own player, so that playhead.js can follow it (views.PLAYHEAD_JS)
                    audio_in = gr.Audio(sources=["microphone", "upload"], type="filepath", elem_id="clip-audio",
                                        label="Your clip — record or upload",
                                        waveform_options=gr.WaveformOptions(show_recording_waveform=False))
                    model = gr.Dropdown(choices=views.model_choices(), value=pipeline.default_model(),
                                        label="Model", info="best measured model first")
                    analyse_btn = gr.Button("Analyse", variant="primary")
                    decoder = gr.Radio(list(beam.DECODERS), value="greedy", label="Decoder",
                                       info="greedy: best path · beam: prefix beam search + language models (weights tuned per model)")
                    ANALYSE_INPUTS = [audio_in, model, decoder]
                    examples_slot = gr.Column()  # filled below, once the outputs exist
                with gr.Column(scale=3, min_width=420):
                    transcript = gr.Textbox(label="Transcript (CTC decoding)", elem_id="transcript", lines=2,
                                            max_lines=5, interactive=False, buttons=["copy"],
                                            placeholder="the transcript appears here")
                    info = gr.Markdown(elem_id="info", label="Clip")
                    lengths_plot = gr.Plot(label="Lengths", show_label=False)
            window_start = gr.Slider(0, 1, value=0, step=0.1, visible=False, label="window start (s)",
                                     info=f"long clip: the panels below show {longform.VIEW_SECONDS:.0f} s from here")
            follows = dict(elem_classes=[views.PLAYHEAD_CLASS])  # a cursor follows the clip's player
            waveform_plot = gr.Plot(label="Waveform", show_label=False, elem_id="waveform-plot", **follows)
            mfcc_plot = gr.Plot(label="MFCC features", show_label=False, elem_id="mfcc-plot", **follows)
            softmax_plot = gr.Plot(label="Network output", show_label=False, elem_id="softmax-plot", **follows)
            collapse_view = gr.HTML(label="CTC collapse", padding=True, elem_id="ctc-collapse", **follows)
            DETAIL_VIEWS = [waveform_plot, mfcc_plot, softmax_plot, collapse_view]
            ANALYSE_OUTPUTS = [transcript, info, lengths_plot, *DETAIL_VIEWS, analysis, window_start]
            with examples_slot:
                # Cached, so a click answers at once: every row also sets the model and decoder its outputs
                # were computed with. The cache folder is named for a hash of the weights, clips and code
                # (examples.cache_dir), so new weights never show old outputs. A State cannot be cached:
                # a second event computes `analysis` for the teaching tabs from the clicked row.
                clips = examples.listing()
                rows = [[str(ex.path), pipeline.default_model(), "greedy"] for ex in clips]
                examples.use_cache_dir(f"{gr.__version__} {rows}", len(rows))
                shown = [o for o in ANALYSE_OUTPUTS if o is not analysis]
                example_set = gr.Examples(
                    examples=rows, inputs=ANALYSE_INPUTS, outputs=shown, fn=example_views,
                    cache_examples=True, cache_mode="eager", preload=False,  # eager: cached after the server is up
                    example_labels=[f"“{ex.text}” · {ex.voice.split(':')[1]}" for ex in clips],
                    label="Examples — synthesized voices; the label is what they say", examples_per_page=12)
                example_set.dataset.click(example_analysis, inputs=example_set.dataset, outputs=analysis,
                                          trigger_mode="always_last", api_visibility="private")  # the last click wins
        teaching_tabs.build(analysis, audio_in, model)  # inside the RNN, CTC, gradients, order, lesson
        live_tab.build()  # live transcription from the microphone with a causal model (streaming.py)

    gr.on([analyse_btn.click, audio_in.upload, audio_in.stop_recording], analyse,
          inputs=ANALYSE_INPUTS, outputs=ANALYSE_OUTPUTS, api_name="transcribe")
    gr.on([model.input, decoder.input], reanalyse, inputs=ANALYSE_INPUTS, outputs=ANALYSE_OUTPUTS,
          api_visibility="private")  # the user's choice only: an example click sets them too, from the cache
    audio_in.clear(clear, outputs=ANALYSE_OUTPUTS, api_visibility="private")
    window_start.release(show_window, inputs=[analysis, window_start], outputs=DETAIL_VIEWS,
                         api_visibility="private")

demo.queue(default_concurrency_limit=2)  # 2 CPU cores: two analyses at a time, the rest wait in line
torch.set_num_threads(1)  # one core per analysis: two requests with 2 threads each oversubscribe the cores (30x slower measured)
LAUNCH_KWARGS = dict(theme=THEME, css=CSS, js=views.PLAYHEAD_JS, max_file_size="50mb")

if __name__ == "__main__":
    demo.launch(**LAUNCH_KWARGS)  # host/port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860
