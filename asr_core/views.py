"""Stage 5 — views: what the student sees of one Analysis, one builder per panel.

Every figure uses the same time axis: MFCC frame index at the bottom (one frame = 10 ms, the
unit the network works in) and seconds along the top. The builders take a pipeline.Analysis and
return a plotly Figure (or an HTML string for the step-by-step CTC collapse).

Audio and plots together: PLAYHEAD_JS (playhead.js, given to demo.launch(js=...)) moves a cursor across
the panels while the clip plays, and seeks the clip where a panel is clicked. It works on the page's
`#clip-audio` player and on every component with the class PLAYHEAD_CLASS; x = seconds * 100 on every panel.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from . import longform, models
from .audio import SAMPLE_RATE
from .ctc import collapse
from .features import FRAMES_PER_SECOND, HOP_LENGTH
from .vocab import BLANK, LABELS, NUM_CLASSES, display

# One look for every figure: white, light grid, system font, tight margins.
FONT = "Inter, ui-sans-serif, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
INK = "#1f2937"
MUTED = "#6b7280"
ACCENT = "#f97316"      # the greedy path, highlights
WAVE = "#4f46e5"        # the waveform
TEMPLATE = go.layout.Template(layout=go.Layout(
    font=dict(family=FONT, size=13, color=INK),
    title=dict(font=dict(size=15, color=INK), x=0.01, xanchor="left", yref="container", y=1, yanchor="top",
               pad=dict(t=12), subtitle=dict(font=dict(size=12, color=MUTED))),
    paper_bgcolor="white", plot_bgcolor="white",
    margin=dict(l=100, r=100, t=100, b=48),  # fixed, so the time axes of stacked panels line up
    xaxis=dict(showgrid=False, zeroline=False, linecolor="#d1d5db", ticks="outside", tickcolor="#d1d5db",
               title=dict(font=dict(size=12, color=MUTED))),
    yaxis=dict(showgrid=True, gridcolor="#f1f5f9", zeroline=False, linecolor="#d1d5db",
               title=dict(font=dict(size=12, color=MUTED))),
    hoverlabel=dict(bgcolor="white", bordercolor="#d1d5db", font=dict(family=FONT, size=13, color=INK)),
    colorway=[WAVE, ACCENT, "#10b981", "#ef4444", "#0ea5e9"],
))
CONFIG = {"displaylogo": False, "responsive": True}  # plotly config, for gr.Plot / write_image callers

PLAYHEAD_JS = (Path(__file__).with_name("playhead.js")).read_text()
PLAYHEAD_CLASS = "follows-audio"   # elem_classes of the panels the cursor moves across

MAX_WAVE_POINTS = 1600   # envelope buckets: about one per pixel of a wide screen
TOP_K = 3
LONG_ROW = 400         # symbol rows longer than this scroll inside a box


# -- shared axis helpers ------------------------------------------------------------------------------

def _nice_step(seconds: float) -> float:
    """A round tick spacing in seconds giving at most ~10 ticks."""
    for step in (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60):
        if seconds / step <= 10:
            return step
    return 120.0


def first_frame(a) -> int:
    """Index of the Analysis' first frame in the whole recording (non-zero for a longform.window)."""
    return int(round(getattr(a, "offset_s", 0.0) * FRAMES_PER_SECOND))


def frame_index(a) -> np.ndarray:
    """Frame numbers of the Analysis' rows, counted from the start of the recording."""
    return first_frame(a) + np.arange(a.frames)


def _frame_axes(fig: go.Figure, a) -> None:
    """Frames along the bottom axis, seconds along a top axis that follows every zoom."""
    f0 = first_frame(a)
    lo, hi = f0 - 0.5, f0 + max(a.frames, 1) - 0.5
    step = _nice_step(a.frames / FRAMES_PER_SECOND)
    secs = np.arange(np.ceil(f0 / FRAMES_PER_SECOND / step) * step, hi / FRAMES_PER_SECOND + 1e-9, step)
    fig.update_layout(
        xaxis=dict(title=dict(text="frame  (1 frame = 10 ms)"), range=[lo, hi]),
        xaxis2=dict(overlaying="x", matches="x", side="top", showgrid=False, ticks="outside",
                    tickcolor="#d1d5db", tickfont=dict(size=11, color=MUTED), range=[lo, hi],
                    tickmode="array", tickvals=np.round(secs * FRAMES_PER_SECOND, 6).tolist(),
                    ticktext=[f"{s:g} s" for s in np.round(secs, 3)]),
    )
    # An invisible trace on the top axis, so plotly draws it.
    fig.add_trace(go.Scatter(x=[lo, hi], y=[None, None], xaxis="x2", showlegend=False, hoverinfo="skip"))


def _layout(fig: go.Figure, title: str, subtitle: str, height: int, a=None) -> go.Figure:
    if a is not None and hasattr(a, "offset_s"):  # a longform.window of a longer recording
        start = a.offset_s
        subtitle += f" — <b>showing {start:.1f}–{start + a.clip.seconds:.1f} s of the recording</b>"
    fig.update_layout(template=TEMPLATE, title=dict(text=title, subtitle=dict(text=subtitle)), height=height)
    return fig


# -- waveform -----------------------------------------------------------------------------------------

def envelope(samples: np.ndarray, buckets: int = MAX_WAVE_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket start sample, min, max) per bucket: a waveform drawn with a few thousand points."""
    n = len(samples)
    buckets = max(1, min(buckets, n))
    edges = np.linspace(0, n, buckets + 1).astype(int)
    starts = edges[:-1]
    return starts, np.minimum.reduceat(samples, starts), np.maximum.reduceat(samples, starts)


def waveform_figure(a) -> go.Figure:
    """The clip as the network receives it: 16 kHz mono samples, drawn as a min/max envelope."""
    samples = a.clip.samples
    starts, lo, hi = envelope(samples)
    x = first_frame(a) + starts / HOP_LENGTH  # sample index -> frame position
    secs = x / FRAMES_PER_SECOND
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=lo, mode="lines", line=dict(width=0.6, color=WAVE), showlegend=False,
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=hi, mode="lines", line=dict(width=0.6, color=WAVE), fill="tonexty",
                             fillcolor="rgba(79,70,229,0.55)", showlegend=False, customdata=secs,
                             hovertemplate="frame %{x:.0f} · %{customdata:.2f} s<br>peak %{y:.3f}<extra></extra>"))
    _frame_axes(fig, a)
    peak = float(np.abs(samples).max()) if len(samples) else 1.0
    fig.update_yaxes(title_text="amplitude", range=[-1.05 * peak, 1.05 * peak], zeroline=True,
                     zerolinecolor="#e5e7eb")
    title = f"<b>Waveform</b> — {a.clip.seconds:.2f} s, {len(samples):,} samples at {SAMPLE_RATE // 1000} kHz"
    return _layout(fig, title, f"what the microphone heard: {SAMPLE_RATE:,} numbers every second", 250, a)


# -- MFCC features ------------------------------------------------------------------------------------

def mfcc_figure(a) -> go.Figure:
    """The 40 x T matrix the network reads: one column of 40 MFCCs per 10 ms frame."""
    z = a.feats.T  # (40, T)
    fig = go.Figure(go.Heatmap(
        z=z, x=frame_index(a), y=np.arange(z.shape[0]), colorscale="RdBu_r", zmid=0, zmin=-3, zmax=3,
        colorbar=dict(title=dict(text="σ", side="right"), thickness=12, len=0.9, x=1.01, xanchor="left"),
        hovertemplate="frame %{x}<br>coefficient %{y}<br>value %{z:.2f} σ<extra></extra>",
    ))
    _frame_axes(fig, a)
    fig.update_yaxes(title_text="MFCC coefficient", showgrid=False)
    title = f"<b>MFCC features</b> — {z.shape[0]} × {a.frames} (coefficients × frames)"
    sub = ("each column x<sub>t</sub> is one input step of the RNN; "
           "values normalized per clip (red above the clip's average, blue below)")
    return _layout(fig, title, sub, 330, a)


# -- per-frame softmax --------------------------------------------------------------------------------

def top_k(probs: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Indices (T, k) of the k most probable classes per frame, most probable first, and their probabilities."""
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)


def softmax_figure(a) -> go.Figure:
    """29 x T output probabilities with the greedy (argmax) path drawn over them."""
    probs = a.probs               # (T, 29)
    frames = frame_index(a)
    path = np.asarray(a.best_path.path)
    idx, p = top_k(probs)
    labels = [display(i) for i in range(NUM_CLASSES)]
    # customdata per frame: seconds, then (symbol, probability) for the top 3
    custom = np.empty((a.frames, 1 + 2 * TOP_K), dtype=object)
    custom[:, 0] = np.round(frames / FRAMES_PER_SECOND, 2)
    for j in range(TOP_K):
        custom[:, 1 + 2 * j] = [labels[i] for i in idx[:, j]]
        custom[:, 2 + 2 * j] = np.round(p[:, j], 3)
    hover = ("<b>frame %{x}</b> · %{customdata[0]:.2f} s<br>"
             + "<br>".join(f"{j + 1}. <b>%{{customdata[{1 + 2 * j}]}}</b>  %{{customdata[{2 + 2 * j}]:.3f}}"
                           for j in range(TOP_K))
             + "<extra></extra>")
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=probs.T, x=frames, y=np.arange(NUM_CLASSES), colorscale="Blues", zmin=0, zmax=1, hoverinfo="skip",
        colorbar=dict(title=dict(text="p", side="right"), thickness=12, len=0.9, x=1.01, xanchor="left"),
    ))
    fig.add_trace(go.Scatter(
        x=frames, y=path, mode="lines+markers", name="greedy path (argmax)",
        line=dict(color=ACCENT, width=1.2), marker=dict(color=ACCENT, size=4), opacity=0.9,
        customdata=custom, hovertemplate=hover,
    ))
    _frame_axes(fig, a)
    ticks = [{BLANK: "blank ·", 1: "space ␣"}.get(i, labels[i]) for i in range(NUM_CLASSES)]
    fig.update_yaxes(title_text="output class", tickmode="array", tickvals=list(range(NUM_CLASSES)),
                     ticktext=ticks, autorange="reversed", showgrid=False, tickfont=dict(size=12, family="monospace"))
    fig.update_layout(hovermode="x", showlegend=False)
    title = f"<b>Network output</b> — softmax over {NUM_CLASSES} classes at each of {a.frames} frames"
    sub = ("darker = more probable; the orange line is the most probable class per frame; "
           "hover a frame for its top 3")
    return _layout(fig, title, sub, 580, a)


# -- CTC collapse, step by step (HTML) ----------------------------------------------------------------

_CSS = """
<style>
.ctc-card{font-family:%(font)s;color:#1f2937;line-height:1.5;background:#fff;border-radius:12px;padding:4px 2px}
.ctc-step{margin:0 0 14px 0}
.ctc-head{font-size:14px;font-weight:600;margin-bottom:4px}
.ctc-head .n{font-weight:400;color:#6b7280;margin-left:6px}
.ctc-seq{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:14px;line-height:1.9}
.ctc-seq.long{max-height:15em;overflow-y:auto;border:1px solid #e5e7eb;border-radius:8px;padding:4px 6px}
.ctc-seq span{display:inline-block;min-width:1.25em;text-align:center;border-radius:4px;padding:0 1px;margin-right:3px;line-height:1.5}
.ctc-seq .b{color:#9ca3af;background:#f3f4f6}
.ctc-seq .s{background:#fde68a;color:#78350f}
.ctc-seq .a{background:#e0e7ff;color:#3730a3}
.ctc-seq .c{font-weight:700}
.ctc-seq .g{display:inline;padding:0;margin-right:6px;border-radius:4px;box-shadow:0 0 0 1px #94a3b8;
          -webkit-box-decoration-break:clone;box-decoration-break:clone}
.ctc-seq .g span{border-radius:0;margin-right:0}
.follows-audio .ctc-path .g span{cursor:pointer}
.ctc-path .g span.now{outline:2px solid #111827;outline-offset:1px;position:relative;z-index:1}
.ctc-text{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:20px;background:#f0fdf4;
          border:1px solid #bbf7d0;border-radius:8px;padding:6px 10px;color:#14532d;white-space:pre-wrap;word-break:break-word}
.ctc-note{font-size:13px;color:#4b5563;margin:2px 0 10px 0}
.ctc-cols{display:flex;flex-wrap:wrap;gap:20px}
.ctc-live{flex:3 1 480px;min-width:0}
.ctc-teach{flex:1 1 300px;align-self:flex-start;background:#fff7ed;border:1px solid #fed7aa;border-radius:10px;padding:10px 14px}
.ctc-teach h4{margin:0 0 6px 0;font-size:14px}
.ctc-teach .ctc-seq{font-size:13px}
</style>
""" % {"font": FONT}


def _letter_colour(i: int) -> str:
    """A pale background per letter class, so one letter keeps its colour through every step."""
    hue = (i * 137.508) % 360
    return f"hsl({hue:.0f},85%,88%)"


def _box(i: int) -> str:
    """One class as a small coloured box: blank grey, space amber, each letter its own colour."""
    sym = html.escape(display(i))
    if i == BLANK:
        return f'<span class="b">{sym}</span>'
    if LABELS[i] == " ":
        return f'<span class="s">{sym}</span>'
    return f'<span class="c" style="background:{_letter_colour(i)}">{sym}</span>'


def _symbols(ids, group_runs: bool = False) -> str:
    """A row of boxes; with group_runs, frames of one run (same class repeated) are joined together."""
    ids = [int(i) for i in ids]
    cls = "ctc-seq long" if len(ids) > LONG_ROW else "ctc-seq"
    if not group_runs:
        return f'<div class="{cls}">{"".join(_box(i) for i in ids)}</div>'
    groups, start = [], 0
    for k in range(1, len(ids) + 1):
        if k == len(ids) or ids[k] != ids[start]:
            groups.append(f'<span class="g">{_box(ids[start]) * (k - start)}</span>')
            start = k
    return f'<div class="{cls}">{"".join(groups)}</div>'


def _step(title: str, count: str, body: str, note: str = "") -> str:
    note = f'<div class="ctc-note">{note}</div>' if note else ""
    return (f'<div class="ctc-step"><div class="ctc-head">{title}<span class="n">{count}</span></div>'
            f"{body}{note}</div>")


def _teaching_example() -> str:
    """The static "hello" worked example: why the blank must separate the two l's."""
    enc = lambda s: [BLANK if ch == "·" else LABELS.index(ch) for ch in s]  # noqa: E731
    good = collapse(enc("hhe·ll·llo"))
    bad = collapse(enc("hhellllo"))
    return (
        '<div class="ctc-teach"><h4>Why “hello” needs a blank</h4>'
        '<div class="ctc-note">Merging repeats would fuse the two l’s into one. '
        "A blank between them keeps them apart:</div>"
        f"{_symbols(good.path, True)}<div class='ctc-note'>merge → </div>{_symbols(good.merged)}"
        f"<div class='ctc-note'>drop · → <b>{html.escape(good.text)}</b> ✓</div>"
        "<div class='ctc-note' style='margin-top:10px'>Without the blank:</div>"
        f"{_symbols(bad.path, True)}<div class='ctc-note'>merge → </div>{_symbols(bad.merged)}"
        f"<div class='ctc-note'>drop · → <b>{html.escape(bad.text)}</b> ✗ one l lost</div>"
        "</div>"
    )


def collapse_html(a) -> str:
    """Best-path decoding shown step by step: path (T) → repeats merged → blanks removed (L) → text."""
    c = a.best_path
    text = c.text or "(empty: every frame's best class was the blank)"
    live = (
        _step("1 · Best class at every frame", f"{len(c.path)} frames",
              f'<div class="ctc-path" data-first-frame="{first_frame(a)}">{_symbols(c.path, group_runs=True)}</div>',
              "argmax of each softmax column; a framed group is one run of the same class")
        + _step("2 · Merge repeats", f"{len(c.merged)} symbols", _symbols(c.merged),
                "a run of the same class counts once")
        + _step("3 · Remove blanks", f"{len(c.labels)} characters", _symbols(c.labels))
        + _step("4 · Transcript" + (" of this window" if hasattr(a, "offset_s") else ""), f"L = {len(c.labels)}",
                f'<div class="ctc-text">{html.escape(text)}</div>')
    )
    return (f'{_CSS}<div class="ctc-card"><div class="ctc-cols"><div class="ctc-live">{live}</div>'
            f"{_teaching_example()}</div></div>")


# -- the length mismatch ------------------------------------------------------------------------------

def lengths(a) -> dict[str, int]:
    """How many items each stage holds, from samples down to transcript characters."""
    return {
        "samples": len(a.clip.samples),
        "MFCC frames": a.frames,
        "network outputs": int(a.log_probs.shape[0]),
        "after merging": len(a.best_path.merged),
        "transcript chars": len(a.best_path.labels),
    }


def lengths_figure(a) -> go.Figure:
    """Samples → T frames → T outputs → merged path → L characters, on a log scale, with T / L."""
    n = lengths(a)
    names, values = list(n), list(n.values())
    T, L = n["MFCC frames"], n["transcript chars"]
    ratio = f"T / L = {T} / {L} = {T / L:.1f} frames per character" if L else "L = 0: no characters emitted yet"
    colors = ["#a5b4fc", WAVE, "#6366f1", ACCENT, "#10b981"]
    fig = go.Figure(go.Bar(
        x=names, y=[max(v, 0.8) for v in values], marker_color=colors, text=[f"{v:,}" for v in values],
        textposition="outside", cliponaxis=False, customdata=values,
        hovertemplate="%{x}: %{customdata:,}<extra></extra>",
    ))
    fig.update_yaxes(type="log", title_text="count (log scale)", range=[-0.3, np.log10(max(values) * 8)])
    fig.update_xaxes(title_text=None)
    sub = "CTC lets T outputs explain L ≪ T characters; it needs T ≥ L + (number of doubled letters)"
    fig.update_layout(margin=dict(l=70, r=20, t=90))
    return _layout(fig, f"<b>Lengths</b> — {ratio}", sub, 330)


# -- all time-aligned panels, for at most longform.VIEW_SECONDS of a clip ------------------------------

def needs_window(a) -> bool:
    """True when the clip is longer than the detailed views show at once."""
    return a.frames > longform.VIEW_SECONDS * FRAMES_PER_SECOND


def detail_views(a, start_s: float = 0.0) -> tuple:
    """(waveform, MFCC, softmax, collapse HTML) of the clip, or of the window from start_s if it is long."""
    w = longform.window(a, start_s) if needs_window(a) else a
    return waveform_figure(w), mfcc_figure(w), softmax_figure(w), collapse_html(w)


# -- text panels --------------------------------------------------------------------------------------

def info_markdown(a) -> str:
    """One line about the clip: duration, what it was before conversion, any notes."""
    c = a.clip
    ch = "mono" if c.original_channels == 1 else f"{c.original_channels} channels (mixed to mono)"
    rate = (f"{c.original_rate:,} Hz" if c.original_rate == SAMPLE_RATE
            else f"{c.original_rate:,} Hz (resampled to {SAMPLE_RATE:,} Hz)")
    parts = [f"**{c.seconds:.2f} s**", f"{len(c.samples):,} samples", rate, ch,
             f"{a.frames} frames", f"model **{a.model_name}**"
             + (" (bfloat16 copy, for speed)" if models.is_bf16_copy(models.fast(a.model_name)) else "")]
    line = " · ".join(parts)
    if needs_window(a):
        line += (f"  \nThe panels below show {longform.VIEW_SECONDS:.0f} s at a time: "
                 "move the *window start* slider to look at another part; the transcript covers the whole clip.")
    if c.notes:
        line += "  \n⚠️ " + " ".join(c.notes)
    return line


def model_label(name: str) -> str:
    """e.g. "LSTM — CER 0.18 on speechocean762 test, greedy", or "... accuracy not yet measured"."""
    card = models.card(name)
    arch = card.get("arch", {})
    kind = str(arch.get("type", name)).upper()
    shape = ""
    if "num_layers" in arch:
        shape = f" {arch['num_layers']}×{arch.get('hidden_size', '?')}" + (" bi" if arch.get("bidirectional") else "")
    head = card.get("headline") or {}
    if "cer" in head:
        where = " ".join(str(head[k]) for k in ("dataset", "split") if head.get(k))
        acc = f"CER {head['cer']:.2f}" + (f" on {where}" if where else "")
        if head.get("decoder"):
            acc += f", {head['decoder']}"
    else:
        acc = "accuracy not yet measured"
    return f"{kind}{shape} — {acc}"


def model_choices() -> list[tuple[str, str]]:
    """(label, name) pairs for a model selector, best model first."""
    return [(model_label(n), n) for n in models.available()]
