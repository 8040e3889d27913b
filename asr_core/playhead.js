() => {
  // Audio and plots together. While the clip in the first tab's player (#clip-audio) plays, a dark line
  // follows it across every plot with the class "follows-audio" (views.PLAYHEAD_CLASS), and the CTC path
  // outlines the current frame. Clicking a plot, or a frame of the path, moves the player there.
  // Every plot's x axis counts 10 ms frames from the start of the recording (views.py): x = seconds * 100.
  // The line is a plain element laid over the plot: moving it costs nothing, where a Plotly.relayout of a
  // shape redraws the figure (150-400 ms a call, measured).
  const FPS = 100;
  const player = () => document.querySelector('#clip-audio audio');
  const frameBoxes = row => row.querySelectorAll('.g > span');  // one box per frame (views.collapse_html)

  function moveLine(plot, x) {
    const area = plot.querySelector('.nsewdrag');  // the plot's data area
    const box = plot.querySelector('.svg-container');
    if (!area || !box || !plot.layout?.xaxis?.range) return;
    let line = box.querySelector('.playhead');
    if (!line) {
      line = document.createElement('div');
      line.className = 'playhead';
      line.style.cssText = 'position:absolute;width:2px;margin-left:-1px;background:#111827;pointer-events:none';
      box.appendChild(line);
    }
    const [lo, hi] = plot.layout.xaxis.range;  // follows zooming
    const a = area.getBoundingClientRect(), b = box.getBoundingClientRect();
    const left = a.left - b.left + a.width * (x - lo) / (hi - lo);
    line.hidden = x === null || x < lo || x > hi;
    line.dataset.x = x;
    line.style.left = `${left}px`;
    line.style.top = `${a.top - b.top}px`;
    line.style.height = `${a.height}px`;
  }

  function markFrame(row, x) {
    const t = x === null ? -1 : Math.round(x) - Number(row.dataset.firstFrame);
    if (row.dataset.now === String(t)) return;
    row.dataset.now = String(t);
    row.querySelector('.now')?.classList.remove('now');
    frameBoxes(row)[t]?.classList.add('now');
  }

  function follow() {
    const audio = player();
    const x = audio && audio.currentSrc ? audio.currentTime * FPS : null;
    for (const plot of document.querySelectorAll('.follows-audio .js-plotly-plot')) {
      if (plot.offsetParent !== null) moveLine(plot, x);  // skip plots on hidden tabs
    }
    for (const row of document.querySelectorAll('.follows-audio .ctc-path')) markFrame(row, x);
    requestAnimationFrame(follow);
  }
  requestAnimationFrame(follow);

  document.addEventListener('click', (event) => {
    const audio = player();
    if (!audio || !audio.currentSrc) return;
    let x = null;
    const area = event.target.closest('.follows-audio .nsewdrag');
    const box = event.target.closest('.follows-audio .ctc-path .g > span');
    if (area) {
      const [lo, hi] = area.closest('.js-plotly-plot').layout.xaxis.range;
      const r = area.getBoundingClientRect();
      x = lo + (hi - lo) * (event.clientX - r.left) / r.width;
    } else if (box) {
      const row = box.closest('.ctc-path');
      x = Number(row.dataset.firstFrame) + Array.prototype.indexOf.call(frameBoxes(row), box);
    }
    if (x === null) return;
    audio.currentTime = Math.min(Math.max(x / FPS, 0), audio.duration || Infinity);
  });
}
