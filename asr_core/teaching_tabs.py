"""The teaching tabs of the page: layout and event wiring, called from app.py inside its gr.Tabs().

    teaching_tabs.build(analysis, audio_in, model)

Every tab works on the clip loaded in the first tab: the `analysis` state (pipeline.Analysis) for the
views that only draw, or the audio file and model selector for the three API endpoints
(/align, /gradients, /shuffle), which analyse the file themselves so that they can be called
from gradio_client. Computations live in introspect.py and align.py, figures in teaching_views.py.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from . import align, beam, examples, introspect, longform, models, pipeline, views
from . import teaching_views as tv
from .audio import SAMPLE_RATE, AudioError

NO_CLIP = "Load a clip in the first tab (record, upload or pick an example), then come back here."


def _user_error(message: str) -> gr.Error:
    """A message for the person using the page (no clip, unreadable clip, ...): shown, not logged as a crash."""
    return gr.Error(message, print_exception=False)


def _analyse(audio_path, model_name=None) -> pipeline.Analysis:
    """Analyse a clip file for an endpoint, with the messages the first tab gives."""
    if not audio_path:
        raise _user_error(NO_CLIP)
    try:
        a = pipeline.transcribe_file(audio_path, model_name or None)
    except AudioError as e:
        raise _user_error(str(e)) from None
    except KeyError as e:
        raise _user_error(f"Unknown model: {e}") from None
    return a


def _start(a):
    """The stretch the teaching views draw: the whole clip, or the first longform.VIEW_SECONDS of a long one."""
    return longform.window(a, 0.0) if views.needs_window(a) else a


def _model_names() -> list[str]:
    order = {"rnn": 0, "lstm": 1, "gru": 2}
    return sorted(models.available(), key=lambda n: (order.get(n, 9), n))


# -- 1 and 2: inside the RNN ---------------------------------------------------------------------------

def stepper_view(a, model_name, t):
    """Figures for step t of the chosen model on the loaded clip (states computed once, then cached)."""
    if a is None:
        return gr.Slider(), NO_CLIP, None, None, None
    u = introspect.unroll(model_name, a.feats)
    t = int(min(max(0, t or 0), u.frames - 1))
    return (gr.Slider(maximum=u.frames - 1, value=t), tv.stepper_markdown(u, t),
            tv.chain_figure(u, t), tv.stepper_strips(u, t), tv.stepper_output(u, t))


def stepper_tick(a, model_name, t, speed):
    """The play button's timer: advance the slider and redraw; stop at the last frame."""
    if a is None:
        return (False, gr.Timer(active=False), "▶ Play", *stepper_view(None, model_name, t))
    last = min(a.frames, introspect.MAX_FRAMES) - 1
    t = min(int(t or 0) + int(speed), last)
    if t < last:  # keep going; leave play/pause to the button (a tick still in flight must not restart it)
        return (gr.skip(), gr.skip(), gr.skip(), *stepper_view(a, model_name, t))
    return (False, gr.Timer(active=False), "▶ Play", *stepper_view(a, model_name, t))


def toggle_play(playing, t, a):
    """Start or stop stepping; starting at the end rewinds to frame 0."""
    playing = not playing
    if playing and a is not None and int(t or 0) >= min(a.frames, introspect.MAX_FRAMES) - 1:
        t = 0
    return playing, gr.Timer(active=playing), "❚❚ Pause" if playing else "▶ Play", t


def memory_view(a, model_name, which):
    if a is None:
        return None, None
    u = introspect.unroll(model_name, a.feats)
    states, label = (u.readout, "the states the softmax reads") if which == "readout" else (u.h, "layer-1 h_t")
    return tv.pca_figure(u, introspect.pca_path(states), label), tv.gates_over_time(u)


# -- 3: reference text, CTC loss, forced alignment -----------------------------------------------------

def align_view(audio_path, text, model_name):
    """/align: (audio file, reference text, model) -> alignment JSON first, then the views."""
    if not (text or "").strip():
        raise _user_error("Type what was said in the clip (the reference text) first.")
    a = _analyse(audio_path, model_name)
    try:
        al = align.align(a.log_probs, text)
    except align.AlignmentError as e:
        raise _user_error(str(e)) from None
    result = {"model": a.model_name, "greedy_text": a.text, **al.to_json()}
    out = Path(tempfile.mkdtemp(prefix="alignment-")) / "alignment.json"
    out.write_text(json.dumps(result, indent=1))
    subtitles = [{"text": w.text, "timestamp": [round(w.start_s, 3), round(w.end_s, 3)]} for w in al.words]
    spans = {"words": [(w.start_s, w.end_s) for w in al.words], "chars": [(c.start_s, c.end_s) for c in al.chars]}
    w = _start(a)
    return (result, tv.alignment_figure(w.clip.samples, w.feats, w.log_probs, al),
            tv.alignment_markdown(al, a.text), tv.span_rows(al.words), tv.span_rows(al.chars),
            gr.DownloadButton(value=str(out), visible=True),
            gr.Audio(value=(SAMPLE_RATE, a.clip.samples), subtitles=subtitles or None),
            {"samples": a.clip.samples, **spans})


def play_span(store, kind, evt: gr.SelectData):
    """A word or character was clicked: its stretch of audio, to the autoplaying player."""
    if not store or evt is None or evt.index is None:
        return gr.skip()
    row = evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)
    spans = store[kind]
    if not 0 <= row < len(spans):
        return gr.skip()
    start, end = spans[row]
    span = align.Span("", 0, 0, start, end, 0.0)
    return (SAMPLE_RATE, align.segment(store["samples"], span))


def play_word(store, evt: gr.SelectData):
    return play_span(store, "words", evt)


def play_char(store, evt: gr.SelectData):
    return play_span(store, "chars", evt)


def toy_view():
    rows, note = tv.toy_two_frames()
    lp = tv.toy_log_probs()
    empty, a_lab = align.labelling_nll(lp, []), align.labelling_nll(lp, [align.LABELS.index("a")])
    note += (f"\n\nChecked with torch's `ctc_loss` (the forward algorithm): P(“”) = {np.exp(-empty):.2f}, "
             f"P(“a”) = {np.exp(-a_lab):.2f}.")
    return rows, note


def beam_view(a, use_lm):
    """Greedy vs prefix beam search (asr_core.beam) on the loaded clip, with exact labelling probabilities."""
    if a is None:
        return None, NO_CLIP
    a = _start(a)
    options = beam.settings(a.model_name) if use_lm else {"beam": 16}
    hyps = beam.beam_search(a.log_probs, nbest=5, **options)
    rows, note = tv.beam_rows(a.log_probs, a.best_path.labels, hyps)
    if use_lm:
        word = (f" + {options['gamma']} · log P_word(words)" if options.get("gamma") else "")
        note += (f"\n\nWith the language models the beam ranks by log P(text | audio) "
                 f"+ {options['alpha']} · log P_LM(text) + {options['beta']} · length{word}, so its order can "
                 "differ from the exact acoustic probability column.")
    return rows, note


# -- 5: vanishing gradients ----------------------------------------------------------------------------

def gradients_view(audio_path):
    """/gradients: (audio file) -> per model [(distance, norm)] JSON first, then the chart and its reading."""
    a = _start(_analyse(audio_path))
    grads = introspect.gradients_all(a.feats, _model_names())
    reading = introspect.gradient_reading(grads)
    return tv.gradient_json(grads, reading), tv.gradient_figure(grads, reading), reading


# -- 6: order matters ----------------------------------------------------------------------------------

def _example_path(name: str) -> Path:
    return examples.EXAMPLES_DIR / f"{name}.wav"


def order_view(model_name):
    """"cat" and "act": nearly the same sounds in another order, through the chosen model."""
    items, lines = [], []
    for name in ("cat", "act"):
        path = _example_path(name)
        if not path.exists():
            return None, f"The example clip {path.name} is missing (run `python -m asr_core.examples`)."
        a = pipeline.transcribe_file(str(path), model_name)
        items.append((f"“{name}” ({a.frames} frames) → model hears “{a.text or '(nothing)'}”", a.feats, a.log_probs))
        nll = align.labelling_nll(a.log_probs, align.encode(name))
        swap = align.labelling_nll(a.log_probs, align.encode("act" if name == "cat" else "cat"))
        lines.append(f"- clip “{name}”: −log P(“{name}”) = **{nll:.1f}**, "
                     f"−log P(“{'act' if name == 'cat' else 'cat'}”) = **{swap:.1f}** nats")
    note = ("The two clips are made of nearly the same sounds (k, æ, t) in a different order. "
            "A model that only counted sounds could not tell them apart; a recurrent one carries the order "
            "in its hidden state. The lower −log P, the more the model believes that text:\n\n" + "\n".join(lines))
    return tv.order_figure(items), note


def shuffle_view(audio_path, model_name, reference, seed):
    """/shuffle: (audio file, model, optional reference, seed) -> summary JSON first, then the views."""
    a = _start(_analyse(audio_path, model_name))
    s = introspect.shuffle_experiment(a.model_name, a.feats, int(seed or 0))
    losses = None
    labels = align.encode(reference or "")
    if labels:
        losses = (align.labelling_nll(s.original_log_probs, labels), align.labelling_nll(s.log_probs, labels))
    summary = {"model": a.model_name, "seed": int(seed or 0), **tv.shuffle_summary(s, losses)}
    return summary, tv.shuffle_figure(s), tv.shuffle_markdown(summary)


# -- 8: the lesson -------------------------------------------------------------------------------------

def lesson_view(a):
    """One live figure per step of the chapter, from the loaded clip."""
    if a is None:
        return [NO_CLIP] + [None] * 7
    a = _start(a)
    u = introspect.unroll("rnn", a.feats) if "rnn" in models.available() else introspect.unroll(a.model_name, a.feats)
    t = int(np.argmax(np.exp(u.log_probs[:, 1:]).max(axis=1))) if u.frames else 0
    grads = introspect.gradients_all(a.feats, _model_names())
    gated = next((n for n in ("lstm", "gru") if n in models.available()), a.model_name)
    return (f"Working on your clip: **{a.clip.seconds:.2f} s**, T = **{a.frames}** frames, "
            f"model **{a.model_name}** heard “{a.text or '(nothing yet)'}”.",
            views.mfcc_figure(a), tv.chain_figure(u, t), views.softmax_figure(a), views.lengths_figure(a),
            views.collapse_html(a), tv.gradient_figure(grads, introspect.gradient_reading(grads)),
            tv.gates_over_time(introspect.unroll(gated, a.feats)))


LESSON = [
    ("1 · From sound to a sequence of vectors",
     "A microphone gives 16 000 numbers a second: too many, and too raw. Every 10 ms we take a 25 ms slice "
     "of sound and describe its spectrum with 40 MFCCs (mel-frequency cepstral coefficients). The clip becomes "
     "a sequence x<sub>1</sub> … x<sub>T</sub> of 40-number columns, one per frame: this picture is everything "
     "the network gets."),
    ("2 · The recurrent network reads one column at a time",
     "At step t the RNN combines the new column x<sub>t</sub> with its own previous state: "
     "h<sub>t</sub> = tanh(W<sub>hh</sub> h<sub>t−1</sub> + W<sub>xh</sub> x<sub>t</sub> + b<sub>h</sub>). "
     "The same weights are used at every step; unrolled in time it is a chain, and h<sub>t</sub> is the only "
     "thing that carries the past forward. Below: the textbook RNN around the frame where it is most sure of a "
     "character. (Step through it in *Inside the RNN*.)"),
    ("3 · A softmax at every step",
     "From each h<sub>t</sub> the network reads out o<sub>t</sub> = softmax(W<sub>ho</sub> h<sub>t</sub> + "
     "b<sub>o</sub>): 29 probabilities, for a–z, space, apostrophe and the CTC blank ·. One column per frame, "
     "so T columns for T frames."),
    ("4 · T frames, L characters",
     "Speech is slow next to text: a character lasts several frames, so T is many times L. "
     "Nobody tells the network which frames belong to which letter; the training data only says the text."),
    ("5 · CTC: many paths, one text",
     "CTC lets every frame say a character or blank, then merges repeats and drops blanks. Many frame-level "
     "paths collapse to the same text, and the probability of the text is the sum over all of them. Best-path "
     "decoding takes the top symbol per frame (below); *Reference & CTC* aligns a text you type, computes "
     "its exact probability, and shows when the best path is not the best text."),
    ("6 · Why plain RNNs forget",
     "Training follows gradients back through the chain. Each step multiplies them by W<sub>hh</sub> and the "
     "slope of tanh, so after many steps they shrink exponentially: the output at the end barely depends on "
     "frames far back. Measured on your clip with the shipped models:"),
    ("7 · LSTM and GRU: gates that choose what to keep",
     "An LSTM keeps a cell state updated by addition, c<sub>t</sub> = f ⊙ c<sub>t−1</sub> + i ⊙ g, with a "
     "forget gate f that can stay near 1; a GRU blends old and new state with an update gate z. Gradients can "
     "then flow along the cell instead of through a squashing nonlinearity at every step. Their gates on your "
     "clip:"),
]


# -- the layout ----------------------------------------------------------------------------------------

def build(analysis: gr.State, audio_in: gr.Audio, model: gr.Dropdown) -> None:
    """Add the teaching tabs (call inside the page's `with gr.Tabs():`)."""
    names = _model_names()
    first = "rnn" if "rnn" in names else names[0]

    with gr.Tab("Inside the RNN", id="inside", elem_id="tab-inside") as inside_tab:
        gr.Markdown("Step through the network frame by frame on the loaded clip. Every number is the real one "
                    "from the chosen model; states are computed once per clip, so moving the slider only redraws.")
        with gr.Row():
            step_model = gr.Radio(names, value=first, label="Model", scale=2)
            play = gr.Button("▶ Play", scale=1)
            speed = gr.Radio([1, 5, 10], value=1, label="frames per tick", scale=1)
        step = gr.Slider(0, 100, value=0, step=1, label="time step t (frame; 100 frames = 1 s)", elem_id="step")
        step_md = gr.Markdown()
        chain_plot = gr.Plot(show_label=False)
        strips_plot = gr.Plot(show_label=False)
        out_plot = gr.Plot(show_label=False, elem_id="step-output")
        with gr.Accordion("The hidden state as memory (PCA)", open=True):
            which = gr.Radio([("states the softmax reads", "readout"), ("layer-1 h_t", "h")], value="readout",
                             label="states")
            pca_plot = gr.Plot(show_label=False)
            gates_plot = gr.Plot(show_label=False)
        playing = gr.State(False)
        timer = gr.Timer(0.3, active=False)

    step_outputs = [step, step_md, chain_plot, strips_plot, out_plot]
    gr.on([inside_tab.select, step_model.change], stepper_view, inputs=[analysis, step_model, step],
          outputs=step_outputs, api_visibility="private")
    step.input(stepper_view, inputs=[analysis, step_model, step], outputs=step_outputs,
               trigger_mode="always_last", api_visibility="private")
    play.click(toggle_play, inputs=[playing, step, analysis], outputs=[playing, timer, play, step],
               api_visibility="private").then(
        stepper_view, inputs=[analysis, step_model, step], outputs=step_outputs, api_visibility="private")
    timer.tick(stepper_tick, inputs=[analysis, step_model, step, speed], outputs=[playing, timer, play, *step_outputs],
               trigger_mode="once", concurrency_limit=1, api_visibility="private")
    gr.on([inside_tab.select, step_model.change, which.change], memory_view,
          inputs=[analysis, step_model, which], outputs=[pca_plot, gates_plot], api_visibility="private")

    with gr.Tab("Reference & CTC", id="ctc", elem_id="tab-ctc") as ctc_tab:
        gr.Markdown("Type what was said. The model's outputs give the probability of that exact text "
                    "(the CTC loss, summed over every path) and the most probable moment of each character.")
        with gr.Row():
            ref = gr.Textbox(label="What was said (reference text)", placeholder="e.g. hello world", scale=4,
                             elem_id="reference")
            align_btn = gr.Button("Align", variant="primary", scale=1)
        align_md = gr.Markdown()
        align_plot = gr.Plot(show_label=False, elem_id="alignment-plot")
        with gr.Row():
            with gr.Column():
                words_df = gr.Dataframe(headers=["word", "start s", "end s", "confidence"], interactive=False,
                                        label="Words — click one to hear it", elem_id="aligned-words")
            with gr.Column():
                chars_df = gr.Dataframe(headers=["char", "start s", "end s", "confidence"], interactive=False,
                                        label="Characters — click one to hear it", max_height=320)
        with gr.Row():
            span_audio = gr.Audio(label="Selected word or character", autoplay=True, interactive=False)
            subtitled = gr.Audio(label="The clip with the aligned words as subtitles", interactive=False)
        with gr.Row():
            download = gr.DownloadButton("Download timestamps (JSON)", visible=False)
        align_json = gr.JSON(label="Alignment (JSON)", open=False)
        spans = gr.State(None)
        gr.Markdown("### Greedy decoding vs beam search\nGreedy decoding keeps the best symbol at each frame "
                    "(the best *path*). Prefix beam search keeps the best text prefixes and adds up the "
                    "probabilities of all paths that reach the same text.")
        with gr.Row():
            use_lm = gr.Checkbox(False, label="add the language models (characters, and words where tuned) to the beam")
            beam_btn = gr.Button("Decode the loaded clip both ways")
        beam_md = gr.Markdown()
        beam_df = gr.Dataframe(headers=["decoder", "text", "beam score", "log P(text) all paths",
                                        "log P best path"], interactive=False, wrap=True,
                               label="n-best (exact log P(text) from ctc_loss; best path from forced alignment)",
                               elem_id="beam-table")
        toy_md = gr.Markdown()
        toy_df = gr.Dataframe(headers=["path (2 frames)", "P(path)", "collapses to"], interactive=False,
                              label="The classic two-frame example: p(·) = 0.6, p(a) = 0.4 at both frames")

    gr.on([align_btn.click, ref.submit], align_view, inputs=[audio_in, ref, model],
          outputs=[align_json, align_plot, align_md, words_df, chars_df, download, subtitled, spans],
          api_name="align")
    words_df.select(play_word, inputs=[spans], outputs=span_audio, api_visibility="private")
    chars_df.select(play_char, inputs=[spans], outputs=span_audio, api_visibility="private")
    ctc_tab.select(toy_view, outputs=[toy_df, toy_md], api_visibility="private")
    gr.on([ctc_tab.select, beam_btn.click, use_lm.change], beam_view, inputs=[analysis, use_lm],
          outputs=[beam_df, beam_md], api_visibility="private")

    with gr.Tab("Vanishing gradients", id="gradients", elem_id="tab-gradients") as grad_tab:
        gr.Markdown("How much does the network's last output still depend on each earlier input frame? "
                    "We differentiate the log-probability of its top class at the last step with respect to every "
                    "input frame x_t, for each shipped model, on the loaded clip.")
        grad_btn = gr.Button("Measure on the loaded clip", variant="primary")
        grad_reading = gr.Markdown()
        grad_plot = gr.Plot(show_label=False)
        grad_json = gr.JSON(label="Numbers (JSON)", open=False)
    grad_btn.click(gradients_view, inputs=[audio_in], outputs=[grad_json, grad_plot, grad_reading],
                   api_name="gradients")
    grad_tab.select(gradients_view, inputs=[audio_in], outputs=[grad_json, grad_plot, grad_reading],
                    api_visibility="private")

    with gr.Tab("Order matters", id="order", elem_id="tab-order") as order_tab:
        order_model = gr.Radio(names, value=first, label="Model")
        with gr.Row():
            for name in ("cat", "act"):
                if _example_path(name).exists():
                    gr.Audio(str(_example_path(name)), label=f"“{name}”", interactive=False)
        order_md = gr.Markdown()
        order_plot = gr.Plot(show_label=False, elem_id="order-plot")
        gr.Markdown("### Shuffle the frames of the loaded clip\nSame columns, random order (fixed seed). "
                    "If the network judged frames one by one, the transcript would just be scrambled letters "
                    "in the same amounts; a recurrent network reads a sequence, so its outputs change.")
        with gr.Row():
            shuffle_ref = gr.Textbox(label="Reference text (optional: compares its CTC loss before and after)",
                                     scale=3)
            seed = gr.Number(value=0, precision=0, label="seed", scale=1)
            shuffle_btn = gr.Button("Shuffle", variant="primary", scale=1)
        shuffle_md = gr.Markdown()
        shuffle_plot = gr.Plot(show_label=False)
        shuffle_json = gr.JSON(label="Numbers (JSON)", open=False)
    gr.on([order_tab.select, order_model.change], order_view, inputs=order_model, outputs=[order_plot, order_md],
          api_visibility="private")
    shuffle_btn.click(shuffle_view, inputs=[audio_in, order_model, shuffle_ref, seed],
                      outputs=[shuffle_json, shuffle_plot, shuffle_md], api_name="shuffle")

    with gr.Tab("Lesson", id="lesson", elem_id="tab-lesson") as lesson_tab:
        lesson_head = gr.Markdown(NO_CLIP)
        lesson_outputs = [lesson_head]
        for i, (title, text) in enumerate(LESSON):
            gr.Markdown(f"### {title}\n{text}")
            lesson_outputs.append(gr.HTML() if i == 4 else gr.Plot(show_label=False))
    lesson_tab.select(lesson_view, inputs=analysis, outputs=lesson_outputs, api_visibility="private")
