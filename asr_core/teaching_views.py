"""Teaching views: figures for the lesson tabs, drawn from real values of the loaded model and clip.

Each builder takes the results of asr_core.introspect / asr_core.align (or an Analysis) and returns
a plotly Figure, an HTML string, Markdown or table rows. The look follows asr_core.views.
"""
from __future__ import annotations

import html
import math
import textwrap

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from .audio import SAMPLE_RATE
from .features import FRAMES_PER_SECOND
from .introspect import GATE_NAMES, PCAPath, Shuffled, Unrolled
from .views import ACCENT, INK, MUTED, TEMPLATE, WAVE, envelope
from .vocab import BLANK, LABELS, NUM_CLASSES, display

GREY = "#9ca3af"
SYMBOLS = [display(i) for i in range(NUM_CLASSES)]
GATE_TITLES = {
    "i": "input gate i", "f": "forget gate f", "g": "candidate g", "o": "output gate o",
    "r": "reset gate r", "z": "update gate z", "n": "candidate n",
}
MODEL_COLOURS = {"rnn": "#ef4444", "lstm": WAVE, "gru": "#10b981"}


def _sub(text: str) -> str:
    return f"<br><span style='font-size:12px;color:{MUTED}'>{text}</span>"


def _layout(fig: go.Figure, title: str, height: int, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title), height=height, **kw)
    return fig


def char_colour(k: int) -> str:
    """One colour per output class: grey for the blank, tan for the space, a palette for letters."""
    if k == BLANK:
        return GREY
    if LABELS[k] == " ":
        return "#d6b98c"
    palette = qualitative.Dark24 + qualitative.Light24
    return palette[(k * 7) % len(palette)]


def model_title(u: Unrolled) -> str:
    if u.layers == 1 and not u.bidirectional:
        return u.cell.upper()
    return f"{u.cell.upper()} ({u.layers} layers{', bidirectional' if u.bidirectional else ''})"


# -- 1. the unrolled RNN, one step at a time ------------------------------------------------------------

def state_rows(u: Unrolled, t: int) -> list[tuple[str, np.ndarray]]:
    """The vectors shown as heat strips at step t: h_{t-1}, the gates, (c_t), h_t."""
    rows = [("h<sub>t-1</sub>", u.h_prev(t))]
    rows += [(GATE_TITLES[g].split()[-1] + f" ({GATE_TITLES[g].split()[0]})", u.gates[g][t])
             for g in GATE_NAMES[u.cell]]
    if u.c is not None:
        rows.append(("c<sub>t</sub>", u.c[t]))
    rows.append(("h<sub>t</sub>", u.h[t]))
    return rows


def stepper_strips(u: Unrolled, t: int) -> go.Figure:
    """x_t as a strip of 40 coefficients; h_{t-1} → (gates) → h_t as strips of hidden units."""
    rows = state_rows(u, t)
    n = len(rows)
    fig = make_subplots(rows=2, cols=1, row_heights=[1.4 / (n + 1.4), n / (n + 1.4)], vertical_spacing=0.22 * 4 / (n + 4),
                        subplot_titles=(f"input x<sub>t</sub>: 40 MFCCs of frame {t}",
                                        f"hidden units (layer 1{', forward direction' if u.bidirectional else ''})"))
    fig.add_trace(go.Heatmap(z=u.x[t][None], y=["x<sub>t</sub>"], colorscale="RdBu_r", zmin=-3, zmax=3,
                             showscale=False, hovertemplate="coefficient %{x}: %{z:.2f} σ<extra></extra>"),
                  row=1, col=1)
    names = [name for name, _ in rows][::-1]
    z = np.stack([v for _, v in rows])[::-1]
    fig.add_trace(go.Heatmap(z=z, y=names, colorscale="RdBu_r", zmin=-1, zmax=1,
                             colorbar=dict(thickness=10, len=0.7, y=0.38),
                             hovertemplate="unit %{x}<br>%{y}: %{z:.3f}<extra></extra>"), row=2, col=1)
    fig.update_xaxes(showgrid=False, showticklabels=False, row=1, col=1)
    fig.update_xaxes(title_text="hidden unit", showgrid=False, row=2, col=1)
    fig.update_yaxes(showgrid=False, tickfont=dict(size=12))
    secs = t / FRAMES_PER_SECOND
    title = (f"<b>Step t = {t}</b> ({secs:.2f} s) — {model_title(u)}"
             + _sub("blue −1 … red +1; gates run 0…1 (sigmoid) and candidates −1…1 (tanh)"))
    return _layout(fig, title, 210 + 40 * n, margin=dict(l=110, r=24, t=110, b=44))


def stepper_output(u: Unrolled, t: int, top: int = 3) -> go.Figure:
    """o_t: the 29 probabilities at step t, the most probable classes named."""
    p = np.exp(u.log_probs[t])
    order = np.argsort(-p)[:top]
    colours = [ACCENT if k in order else "#c7d2fe" for k in range(NUM_CLASSES)]
    fig = go.Figure(go.Bar(x=SYMBOLS, y=p, marker_color=colours,
                           hovertemplate="%{x}: %{y:.3f}<extra></extra>"))
    for k in order:
        fig.add_annotation(x=SYMBOLS[k], y=p[k], text=f"<b>{html.escape(SYMBOLS[k])}</b> {p[k]:.2f}",
                           showarrow=False, yshift=10, font=dict(size=12))
    fig.update_yaxes(range=[0, 1.12], title_text="probability")
    fig.update_xaxes(type="category", tickmode="array", tickvals=SYMBOLS, ticktext=SYMBOLS, tickangle=0,
                     tickfont=dict(family="monospace", size=13))
    names = ", ".join(f"{SYMBOLS[k]} {p[k]:.2f}" for k in order)
    return _layout(fig, f"<b>o<sub>t</sub> = softmax(W<sub>ho</sub> h<sub>t</sub> + b<sub>o</sub>)</b> at t = {t}"
                   + _sub(f"top: {html.escape(names)} · · is the blank, ␣ the space"), 280)


def chain_figure(u: Unrolled, t: int, window: int = 3) -> go.Figure:
    """The network unrolled over steps t-window..t+window: x → h → o boxes, h_{s-1} → h_s arrows."""
    lo, hi = max(0, t - window), min(u.frames - 1, t + window)
    w, hgt = 0.36, 0.26
    ys = {"x": 0.0, "h": 1.0, "o": 2.0}
    p = np.exp(u.log_probs)
    shapes, notes = [], []   # plain dicts, set once: much faster than add_shape/add_annotation per item

    def arrow(x, y, ax, ay, colour=INK, width=1.4):
        notes.append(dict(x=x, y=y, ax=ax, ay=ay, xref="x", yref="y", axref="x", ayref="y", text="",
                          showarrow=True, arrowhead=2, arrowwidth=width, arrowcolor=colour))

    for s in range(lo, hi + 1):
        now = s == t
        line = dict(color=ACCENT if now else "#cbd5e1", width=3 if now else 1.5)
        fill = {"x": "#eef2ff", "h": "#fff7ed" if now else "#f8fafc", "o": "#ecfdf5"}
        k = int(np.argmax(p[s]))
        labels = {
            "x": f"x<sub>{s}</sub><br><span style='font-size:10px'>{s / FRAMES_PER_SECOND:.2f} s</span>",
            "h": f"h<sub>{s}</sub><br><span style='font-size:10px'>‖h‖ {np.linalg.norm(u.h[s]):.1f}</span>",
            "o": f"<b>{html.escape(SYMBOLS[k])}</b><br><span style='font-size:10px'>p {p[s, k]:.2f}</span>",
        }
        for row, y in ys.items():
            shapes.append(dict(type="rect", x0=s - w, x1=s + w, y0=y - hgt, y1=y + hgt, line=line,
                               fillcolor=fill[row], layer="below"))
            notes.append(dict(x=s, y=y, text=labels[row], showarrow=False, font=dict(size=12)))
        arrow(s, 1 - hgt, s, 0 + hgt)          # x_s -> h_s
        arrow(s, 2 - hgt, s, 1 + hgt)          # h_s -> o_s
        arrow(s - w, 1, s - 1 + w, 1, ACCENT if now else INK, 2)   # h_{s-1} -> h_s: the recurrence
    first = "h<sub>-1</sub> = 0" if lo == 0 else f"h<sub>{lo - 1}</sub>"
    notes.append(dict(x=lo - 1 + w, y=1, text=first, showarrow=False, xanchor="right", font=dict(color=MUTED)))
    fig = go.Figure()
    fig.update_layout(shapes=shapes, annotations=notes)
    fig.update_xaxes(visible=False, range=[lo - 1.15, hi + 0.6])
    fig.update_yaxes(visible=False, range=[-0.45, 2.45])
    title = ("<b>The same cell, unrolled in time</b>"
             + _sub("one input frame, one hidden state, one output per step; the orange box is step t"))
    return _layout(fig, title, 330, margin=dict(l=20, r=20, t=70, b=10))


def stepper_markdown(u: Unrolled, t: int) -> str:
    """The update at step t written out with its real numbers."""
    k = int(np.argmax(u.log_probs[t]))
    head = (f"**Step t = {t}** of {u.frames} ({t / FRAMES_PER_SECOND:.2f} s) · "
            f"most probable output: `{SYMBOLS[k]}` ({math.exp(u.log_probs[t, k]):.2f})")
    rec, inp = float(u.recurrent_norm[t]), float(u.input_norm[t])
    if u.cell == "rnn":
        pre = np.arctanh(np.clip(u.h[t], -0.999999, 0.999999))
        sat = float(np.mean(np.abs(pre) > 2))
        body = (f"h<sub>t</sub> = tanh( W<sub>hh</sub> h<sub>t−1</sub> + W<sub>xh</sub> x<sub>t</sub> + b<sub>h</sub> )\n\n"
                f"- memory term ‖W<sub>hh</sub> h<sub>t−1</sub> + b<sub>hh</sub>‖ = **{rec:.2f}**\n"
                f"- new-input term ‖W<sub>xh</sub> x<sub>t</sub> + b<sub>xh</sub>‖ = **{inp:.2f}**\n"
                f"- the input term is {inp / max(rec, 1e-9):.1f}× the memory term; "
                f"{100 * sat:.0f}% of the {u.hidden_size} units are saturated (|pre-activation| > 2)")
        return head + "\n\n" + body
    g = {name: u.gates[name][t] for name in GATE_NAMES[u.cell]}
    where = f"layer 1 of {u.layers}" + (", forward direction" if u.bidirectional else "")
    if u.cell == "lstm":
        body = (f"c<sub>t</sub> = f ⊙ c<sub>t−1</sub> + i ⊙ g,  h<sub>t</sub> = o ⊙ tanh(c<sub>t</sub>)  ({where})\n\n"
                f"- forget gate f: mean **{g['f'].mean():.2f}** — the share of the old cell state kept\n"
                f"- input gate i: mean **{g['i'].mean():.2f}** — how much of the candidate g is written\n"
                f"- output gate o: mean **{g['o'].mean():.2f}** — how much of the cell is shown as h<sub>t</sub>\n"
                f"- ‖c<sub>t</sub>‖ = {np.linalg.norm(u.c[t]):.2f}, ‖h<sub>t</sub>‖ = {np.linalg.norm(u.h[t]):.2f}")
    else:
        body = (f"h<sub>t</sub> = (1 − z) ⊙ n + z ⊙ h<sub>t−1</sub>  ({where})\n\n"
                f"- update gate z: mean **{g['z'].mean():.2f}** — the share of h<sub>t−1</sub> carried over unchanged\n"
                f"- reset gate r: mean **{g['r'].mean():.2f}** — how much of h<sub>t−1</sub> the candidate n may read\n"
                f"- ‖h<sub>t</sub> − h<sub>t−1</sub>‖ = {np.linalg.norm(u.h[t] - u.h_prev(t)):.2f}")
    return head + "\n\n" + body + ("\n\no<sub>t</sub> is the whole model's output at step t "
                                   "(it also reads the upper layers)." if u.layers > 1 or u.bidirectional else "")


def gates_over_time(u: Unrolled) -> go.Figure:
    """Mean activation of each gate over the hidden units, frame by frame (LSTM/GRU)."""
    fig = go.Figure()
    x = np.arange(u.frames)
    for name in GATE_NAMES[u.cell]:
        fig.add_trace(go.Scatter(x=x, y=u.gates[name].mean(axis=1), mode="lines", name=GATE_TITLES[name],
                                 hovertemplate="frame %{x}: %{y:.3f}<extra>" + name + "</extra>"))
    if u.cell == "rnn":
        fig.add_trace(go.Scatter(x=x, y=u.recurrent_norm, name="memory term ‖W<sub>hh</sub> h<sub>t−1</sub> + b‖"))
        fig.add_trace(go.Scatter(x=x, y=u.input_norm, name="input term ‖W<sub>xh</sub> x<sub>t</sub> + b‖"))
    fig.update_xaxes(title_text="frame (10 ms)")
    if u.cell == "rnn":
        fig.update_yaxes(title_text="norm", rangemode="tozero")
    else:
        fig.update_yaxes(title_text="mean over units", range=[-1.05, 1.05])
    if u.cell == "rnn":
        title = (f"<b>The two terms of the update over time</b> — {model_title(u)}"
                 + _sub("how strongly the memory and the new frame push on h<sub>t</sub> at each step"))
    else:
        title = (f"<b>Gates over time</b> — {model_title(u)}, layer 1"
                 + _sub("a forget/update gate near 1 keeps the memory; near 0 overwrites it"))
    return _layout(fig, title, 340, legend=dict(orientation="h", y=-0.25, yanchor="top", x=1, xanchor="right"),
                   margin=dict(l=64, r=24, t=78, b=90))


# -- 2. the hidden state as a path ----------------------------------------------------------------------

def pca_figure(u: Unrolled, pca: PCAPath, states_label: str) -> go.Figure:
    """h_1..h_T projected to 2-D, in time order, each point coloured by the character emitted there."""
    xy = pca.coords
    emitted = np.argmax(u.log_probs, axis=1)
    fig = go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1], mode="lines", line=dict(color="#e5e7eb", width=1),
                               hoverinfo="skip", showlegend=False))
    for k in sorted(set(emitted.tolist()), key=lambda k: (k != BLANK, k)):
        idx = np.nonzero(emitted == k)[0]
        fig.add_trace(go.Scatter(
            x=xy[idx, 0], y=xy[idx, 1], mode="markers", name=SYMBOLS[k] + (" (blank)" if k == BLANK else ""),
            marker=dict(color=char_colour(k), size=5 if k == BLANK else 8, opacity=0.45 if k == BLANK else 0.95),
            customdata=np.stack([idx, idx / FRAMES_PER_SECOND], axis=1),
            hovertemplate="frame %{customdata[0]} · %{customdata[1]:.2f} s<extra>" + SYMBOLS[k] + "</extra>"))
    for i, label in ((0, "start"), (len(xy) - 1, "end")):
        fig.add_annotation(x=xy[i, 0], y=xy[i, 1], text=label, showarrow=True, arrowhead=2, ax=20, ay=-20)
    fig.update_xaxes(title_text=f"PC 1 ({100 * pca.explained[0]:.0f}% of variance)", zeroline=False)
    fig.update_yaxes(title_text=f"PC 2 ({100 * pca.explained[1]:.0f}%)", zeroline=False, scaleanchor="x")
    title = (f"<b>The hidden state as memory</b> — {states_label}, {u.frames} steps of {model_title(u)}"
             + _sub("each point is one h<sub>t</sub>; the grey line joins them in time order; "
                    "colour = character the model emits there (argmax), grey = blank"))
    return _layout(fig, title, 520)


# -- 3. reference text and CTC ---------------------------------------------------------------------------

def alignment_figure(samples: np.ndarray, feats: np.ndarray, log_probs: np.ndarray, alignment) -> go.Figure:
    """Waveform, MFCC and softmax on one time axis, each aligned character's frames shaded."""
    T = len(log_probs)
    secs = np.arange(T) / FRAMES_PER_SECOND
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.04, row_heights=[0.22, 0.3, 0.48])
    starts, lo, hi = envelope(samples)
    ts = starts / SAMPLE_RATE
    fig.add_trace(go.Scatter(x=ts, y=lo, mode="lines", line=dict(width=0.5, color=WAVE), hoverinfo="skip",
                             showlegend=False), row=1, col=1)
    fig.add_trace(go.Scatter(x=ts, y=hi, mode="lines", line=dict(width=0.5, color=WAVE), fill="tonexty",
                             fillcolor="rgba(79,70,229,0.5)", hoverinfo="skip", showlegend=False), row=1, col=1)
    fig.add_trace(go.Heatmap(z=feats.T, x=secs, colorscale="RdBu_r", zmid=0, zmin=-3, zmax=3, showscale=False,
                             hovertemplate="%{x:.2f} s · coef %{y}: %{z:.2f}<extra></extra>"), row=2, col=1)
    probs = np.exp(log_probs)
    fig.add_trace(go.Heatmap(z=probs.T, x=secs, y=np.arange(NUM_CLASSES), colorscale="Blues", zmin=0, zmax=1,
                             showscale=False, hovertemplate="%{x:.2f} s · class %{y}: %{z:.3f}<extra></extra>"),
                  row=3, col=1)
    path = np.asarray(alignment.path)[:T]
    keep = path != BLANK
    fig.add_trace(go.Scatter(x=secs[keep], y=path[keep], mode="markers", name="forced alignment",
                             marker=dict(color=ACCENT, size=6, symbol="square"),
                             hovertemplate="%{x:.2f} s: aligned to %{text}<extra></extra>",
                             text=[SYMBOLS[k] for k in path[keep]]), row=3, col=1)
    greedy = np.argmax(log_probs, axis=1)
    fig.add_trace(go.Scatter(x=secs, y=greedy, mode="lines", name="greedy path", opacity=0.6,
                             line=dict(color="#10b981", width=1)), row=3, col=1)
    half = 0.5 / FRAMES_PER_SECOND
    shapes, notes = [], []   # plain dicts, set once (add_vrect per character is slow)
    for i, ch in enumerate(alignment.chars):
        if ch.text == " " or ch.start >= T:
            continue
        colour = "rgba(249,115,22,0.16)" if i % 2 == 0 else "rgba(16,185,129,0.16)"
        shapes.append(dict(type="rect", xref="x", yref="paper", x0=ch.start_s - half, x1=ch.end_s - half,
                           y0=0, y1=1, fillcolor=colour, line_width=0, layer="above"))
        notes.append(dict(x=(ch.start_s + ch.end_s) / 2 - half, y=1.0, xref="x", yref="y domain",
                          text=f"<b>{html.escape(ch.text)}</b>", showarrow=False, yanchor="bottom",
                          font=dict(size=13, color=INK)))
    for w in alignment.words:
        if w.start >= T:
            continue
        notes.append(dict(x=(w.start_s + w.end_s) / 2 - half, y=1.0, xref="x", yref="y domain", yshift=18,
                          text=html.escape(w.text), showarrow=False, yanchor="bottom",
                          font=dict(size=12, color=MUTED)))
    fig.update_layout(shapes=shapes, annotations=list(fig.layout.annotations) + notes)
    fig.update_yaxes(showgrid=False, showticklabels=False, row=1, col=1)
    fig.update_yaxes(title_text="MFCC", showgrid=False, row=2, col=1)
    fig.update_yaxes(title_text="class", tickmode="array", tickvals=list(range(NUM_CLASSES)), ticktext=SYMBOLS,
                     autorange="reversed", showgrid=False, tickfont=dict(size=9, family="monospace"), row=3, col=1)
    fig.update_xaxes(title_text="time (s)", row=3, col=1)
    title = (f"<b>Forced alignment of “{html.escape(alignment.text)}”</b> — −log P(text | audio) = "
             f"{alignment.nll:.1f} nats ({alignment.per_char_nll:.2f} per character)"
             + _sub("shaded: the frames the most probable path gives each character; orange squares: that path; "
                    "green line: the greedy path"))
    return _layout(fig, title, 640, margin=dict(l=64, r=24, t=110, b=48),
                   legend=dict(orientation="h", y=-0.08, x=1, xanchor="right"))


def span_rows(spans) -> list[list]:
    """Rows for a table of aligned words or characters."""
    return [[s.text if s.text != " " else "␣", round(s.start_s, 2), round(s.end_s, 2), round(s.confidence, 3)]
            for s in spans]


def alignment_markdown(alignment, greedy_text: str) -> str:
    a = alignment
    return (f"**Reference** `{a.text}` · **model heard (greedy)** `{greedy_text or '(nothing)'}`\n\n"
            f"- CTC loss −log P(reference | audio) = **{a.nll:.2f} nats**, {a.per_char_nll:.2f} per character "
            f"(sum over every path that collapses to the reference)\n"
            f"- the single best aligned path has log-probability {a.path_log_prob:.2f}: "
            f"it holds {100 * math.exp(min(0.0, a.path_log_prob + a.nll)):.2g}% of the reference's probability\n"
            f"- {len(a.chars)} characters in {len(a.words)} words over {len(a.path)} frames "
            f"(T / L = {len(a.path) / max(1, len(a.labels)):.1f})")


# -- 4. greedy vs beam -----------------------------------------------------------------------------------

def toy_two_frames(p_blank: float = 0.6) -> tuple[list[list], str]:
    """The classic example: two frames, classes {·, a}; each frame p(·) = 0.6, p(a) = 0.4.

    Every path, its probability and its collapse, plus the total per labelling; the totals are
    checked against torch's ctc_loss (the forward algorithm) in `toy_check`.
    """
    from .ctc import collapse
    p = {BLANK: p_blank, LABELS.index("a"): 1 - p_blank}
    rows, totals = [], {}
    for first in p:
        for second in p:
            prob = p[first] * p[second]
            text = collapse([first, second]).text
            totals[text] = totals.get(text, 0.0) + prob
            rows.append([f"{SYMBOLS[first]} {SYMBOLS[second]}", f"{prob:.2f}", f"“{text}”"])
    best_path = max(((a, b) for a in p for b in p), key=lambda ab: p[ab[0]] * p[ab[1]])
    best_label = max(totals, key=totals.get)
    note = (f"Best single path: `{SYMBOLS[best_path[0]]} {SYMBOLS[best_path[1]]}` "
            f"(p = {p[best_path[0]] * p[best_path[1]]:.2f}) collapses to “{collapse(list(best_path)).text}”. "
            f"But P(“a”) = {totals['a']:.2f} sums three paths and beats P(“”) = {totals['']:.2f}: "
            f"the most probable *labelling* is “{best_label}”. Greedy decoding picks paths; beam search sums them.")
    return rows, note


def toy_log_probs(p_blank: float = 0.6) -> np.ndarray:
    """The two-frame example as a (2, 29) log-probability matrix (only · and a are possible)."""
    lp = np.full((2, NUM_CLASSES), -1e4, dtype=np.float32)
    lp[:, BLANK] = math.log(p_blank)
    lp[:, LABELS.index("a")] = math.log(1 - p_blank)
    return lp


def beam_rows(log_probs, greedy_labels, hyps) -> tuple[list[list], str]:
    """Greedy result and the beam's n-best, each with the exact probability of its text (all paths,
    via ctc_loss) and of its best single path (Viterbi); and a sentence on where they differ."""
    from .align import best_path_log_prob, labelling_nll
    from .vocab import decode

    def row(name, labels, score=None):
        total = -labelling_nll(log_probs, labels)
        best = best_path_log_prob(log_probs, labels)
        return [name, decode(labels) or "(empty)", None if score is None else round(score, 2), round(total, 2),
                round(best, 2)], total, best

    greedy_row, g_total, g_best = row("greedy", list(greedy_labels))
    rows = [greedy_row]
    for n, h in enumerate(hyps, start=1):
        rows.append(row(f"beam #{n}", list(h.labels), h.score)[0])
    if not hyps:
        return rows, "The beam search returned nothing."
    top = hyps[0]
    t_total = -labelling_nll(log_probs, list(top.labels))
    t_best = best_path_log_prob(log_probs, list(top.labels))
    if list(top.labels) == list(greedy_labels):
        note = (f"Here greedy and beam agree on “{decode(top.labels) or '(empty)'}”. Its best single path holds "
                f"{100 * math.exp(min(0.0, t_best - t_total)):.2g}% of its probability; the other paths to the same "
                "text carry the rest.")
    else:
        note = (f"They differ. Greedy follows the most probable *path* (log P = {g_best:.2f}), whose text has "
                f"log P = {g_total:.2f} summed over all its paths. The beam's text “{decode(top.labels)}” has "
                f"log P = {t_total:.2f} over all its paths")
        if t_total > g_total:
            note += (f" — {math.exp(min(700.0, t_total - g_total)):.3g}× more probable as a text — "
                     f"although its best single path scores only {t_best:.2f}.")
        else:
            note += (" — less probable to the acoustic model alone; the beam ranked it first because of the "
                     "language model and length bonus in its score.")
    return rows, note


# -- 5. vanishing gradients ------------------------------------------------------------------------------

def gradient_figure(grads: dict[str, np.ndarray], reading: str = "") -> go.Figure:
    """|| d log p_T / d x_t || against the distance T - t, log y, one line per model."""
    fig = go.Figure()
    for name, norms in grads.items():
        y = np.where(norms > 0, norms, np.nan)   # underflowed to exactly 0: not drawable on log axes
        fig.add_trace(go.Scatter(x=np.arange(len(norms)), y=y, mode="lines", name=name.upper(),
                                 line=dict(color=MODEL_COLOURS.get(name), width=2),
                                 hovertemplate="distance %{x} frames: %{y:.2e}<extra>" + name.upper() + "</extra>"))
    fig.add_vline(x=50, line_dash="dot", line_color=GREY, annotation_text="0.5 s", annotation_position="top")
    fig.update_xaxes(title_text="distance T − t (frames back from the last step; 100 = 1 s)")
    fig.update_yaxes(type="log", title_text="‖∂ log p<sub>T</sub> / ∂ x<sub>t</sub>‖", exponentformat="power")
    title = "<b>Vanishing gradients</b> — how much the last output still depends on each earlier frame"
    if reading:
        title += _sub("<br>".join(html.escape(line) for line in textwrap.wrap(reading, 150)))
    return _layout(fig, title, 480, legend=dict(x=1, xanchor="right", y=1), margin=dict(l=64, r=24, t=110, b=48))


def gradient_json(grads: dict[str, np.ndarray], reading: str) -> dict:
    return {"reading": reading, "quantity": "norm of d log p_T(argmax) / d x_t, indexed by distance T - t",
            "models": {name: [[d, float(v)] for d, v in enumerate(norms)] for name, norms in grads.items()}}


# -- 6. order matters ------------------------------------------------------------------------------------

def order_figure(items: list[tuple[str, np.ndarray, np.ndarray]]) -> go.Figure:
    """MFCC frames and per-frame outputs of clips side by side: items are (title, feats, log_probs)."""
    cols = len(items)
    fig = make_subplots(rows=2, cols=cols, vertical_spacing=0.1, horizontal_spacing=0.06,
                        subplot_titles=[t for t, _, _ in items] + [""] * cols)
    for j, (_, feats, lp) in enumerate(items, start=1):
        fig.add_trace(go.Heatmap(z=feats.T, colorscale="RdBu_r", zmid=0, zmin=-3, zmax=3, showscale=False,
                                 hovertemplate="frame %{x} · coef %{y}: %{z:.2f}<extra></extra>"), row=1, col=j)
        fig.add_trace(go.Heatmap(z=np.exp(lp).T, colorscale="Blues", zmin=0, zmax=1, showscale=False,
                                 customdata=np.broadcast_to(np.array(SYMBOLS)[:, None], (NUM_CLASSES, len(lp))),
                                 hovertemplate="frame %{x} · %{customdata}: %{z:.3f}<extra></extra>"), row=2, col=j)
        fig.update_yaxes(title_text="MFCC" if j == 1 else None, showgrid=False, row=1, col=j)
        fig.update_yaxes(tickmode="array", tickvals=list(range(NUM_CLASSES)), ticktext=SYMBOLS, autorange="reversed",
                         showgrid=False, tickfont=dict(size=8, family="monospace"), row=2, col=j)
        fig.update_xaxes(title_text="frame", row=2, col=j)
    return _layout(fig, "<b>Same sounds, different order</b>"
                   + _sub("top: the MFCC frames the network reads; bottom: its output at each frame"),
                   620, margin=dict(l=64, r=24, t=100, b=48))


def shuffle_summary(s: Shuffled, ref_losses: tuple[float, float] | None = None) -> dict:
    """The shuffle experiment's numbers (JSON-able)."""
    p_orig, p_shuf = np.exp(s.original_log_probs), np.exp(s.log_probs)
    # If the model read each frame alone, shuffled output s would equal the original output at perm[s].
    tv = 0.5 * np.abs(p_shuf - p_orig[s.perm]).sum(axis=1)
    out = {
        "frames": int(len(s.perm)),
        "same_set_of_frames": bool(np.array_equal(np.sort(s.feats, axis=0), np.sort(s.original, axis=0))),
        "original_text": s.original_text,
        "shuffled_text": s.text,
        "mean_output_change": round(float(tv.mean()), 4),
    }
    if ref_losses is not None:
        out["reference_ctc_loss"] = {"original": round(ref_losses[0], 3), "shuffled": round(ref_losses[1], 3)}
    return out


def shuffle_figure(s: Shuffled) -> go.Figure:
    fig = order_figure([(f"original frames → “{html.escape(s.original_text) or '(nothing)'}”",
                         s.original, s.original_log_probs),
                        (f"same frames shuffled → “{html.escape(s.text) or '(nothing)'}”", s.feats, s.log_probs)])
    fig.update_layout(title=dict(text="<b>Shuffle the frames</b>" + _sub(
        "the same columns in a random order: a recurrent model reads a sequence, not a bag of frames")))
    return fig


def shuffle_markdown(summary: dict) -> str:
    lines = [f"- original transcript: `{summary['original_text'] or '(nothing)'}`",
             f"- shuffled transcript: `{summary['shuffled_text'] or '(nothing)'}`",
             f"- same {summary['frames']} frames, only their order changed: "
             f"{'yes' if summary['same_set_of_frames'] else 'no'}",
             f"- if the network judged each frame on its own, shuffling would only reorder its outputs. "
             f"Instead each output changed by **{summary['mean_output_change']:.2f}** on average "
             f"(total-variation distance, 0 = unchanged, 1 = completely different)"]
    if "reference_ctc_loss" in summary:
        r = summary["reference_ctc_loss"]
        lines.append(f"- CTC loss of the reference: **{r['original']:.1f}** nats before, "
                     f"**{r['shuffled']:.1f}** after shuffling")
    return "\n".join(lines)
