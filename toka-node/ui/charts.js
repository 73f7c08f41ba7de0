// Line charts as inline SVG, drawn from samples the console keeps in memory.

const NS = 'http://www.w3.org/2000/svg';
const W = 360;
const H = 140;
const PAD = { left: 44, right: 8, top: 10, bottom: 20 };

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A short number: 1234 → 1.23k. */
export function short(v) {
  if (!Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(2)}G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)}M`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(2)}k`;
  if (a >= 10 || Number.isInteger(v)) return v.toFixed(0);
  return v.toFixed(2);
}

/**
 * An SVG chart of `series` ([{label, cls, points: [[t ms, value]]}]) over the last
 * `spanMs`, its y axis from 0 to the largest value.
 */
export function lineChart(series, { spanMs = 120000, unit = '' } = {}) {
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const now = Date.now();
  const x0 = now - spanMs;
  let max = 0;
  for (const s of series) for (const [, v] of s.points) if (Number.isFinite(v)) max = Math.max(max, v);
  if (max === 0) max = 1;
  const x = (t) => PAD.left + ((t - x0) / spanMs) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (v / max) * (H - PAD.top - PAD.bottom);
  for (const frac of [0, 0.5, 1]) {
    const v = max * frac;
    svg.append(el('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: 'grid' }));
    svg.append(el('text', { x: PAD.left - 4, y: y(v) + 4, class: 'axis', 'text-anchor': 'end' }, short(v) + unit));
  }
  svg.append(el('text', { x: PAD.left, y: H - 4, class: 'axis' }, `-${Math.round(spanMs / 1000)} s`));
  svg.append(el('text', { x: W - PAD.right, y: H - 4, class: 'axis', 'text-anchor': 'end' }, 'now'));
  series.forEach((s, i) => {
    const pts = s.points.filter(([t, v]) => t >= x0 && Number.isFinite(v));
    if (pts.length) {
      const d = pts.map(([t, v], j) => `${j ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
      svg.append(el('path', { d, class: `line ${s.cls || `s${i}`}` }));
    }
  });
  return svg;
}
