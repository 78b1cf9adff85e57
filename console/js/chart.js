// Charts as inline SVG: line charts of live series (refreshed by polling)
// and bar charts. No library: a few scales and paths.

const NS = 'http://www.w3.org/2000/svg';
const W = 560, H = 180, L = 52, R = 12, T = 10, B = 24;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const short = v => {
  const a = Math.abs(v);
  if (a >= 1e6) return `${+(v / 1e6).toPrecision(3)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toPrecision(3)}k`;
  if (a === 0) return '0';
  return String(+v.toPrecision(3));
};

const clock = ms => new Date(ms).toTimeString().slice(0, 8);

function frame(svg, yMax, yMin) {
  for (let i = 0; i <= 4; i++) {
    const v = yMin + (yMax - yMin) * i / 4;
    const y = T + (H - T - B) * (1 - i / 4);
    svg.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: y, y2: y }));
    svg.append(s('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, short(v)));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
}

/** A <figure> of a chart under its caption. */
function figure(title, ...children) {
  const fig = document.createElement('figure');
  fig.style.margin = '0';
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  cap.className = 'muted';
  fig.append(cap, ...children);
  return fig;
}

function legend(names) {
  const div = document.createElement('div');
  div.className = 'legend';
  names.forEach((n, i) => {
    const span = document.createElement('span');
    const swatch = document.createElement('i');
    swatch.className = `c${i % 6}`;
    span.append(swatch, n);
    div.append(span);
  });
  return div;
}

/**
 * A line chart. `series`: [{name, points: [[time ms, value], ...]}].
 * Options: title (the accessible name), unit, threshold (a dashed line),
 * yMin (default 0).
 */
export function lineChart(series, { title = 'chart', unit = '', threshold, yMin = 0 } = {}) {
  const all = series.flatMap(x => x.points);
  yMin = Math.min(yMin, ...all.map(p => p[1]));
  const xs = all.map(p => p[0]);
  let x0 = Math.min(...xs), x1 = Math.max(...xs);
  if (!all.length) { x1 = Date.now(); x0 = x1 - 60000; }
  if (x1 - x0 < 1000) x0 = x1 - 1000;
  const dataMax = Math.max(...all.map(p => p[1]), yMin);
  // A limit far above the data would flatten it: drawn only when near.
  if (threshold !== undefined && dataMax > yMin && threshold > dataMax * 5) {
    title = `${title} (limit ${short(threshold)}${unit ? ' ' + unit : ''}, off the scale)`;
    threshold = undefined;
  }
  let yMax = Math.max(dataMax, threshold ?? -Infinity);
  if (!(yMax > yMin)) yMax = yMin + 1;
  yMax *= 1.1;
  const sx = x => L + (W - L - R) * (x - x0) / (x1 - x0);
  const sy = y => T + (H - T - B) * (1 - (y - yMin) / (yMax - yMin));
  const last = series.map(x => x.points.length ? `${x.name} ${short(x.points.at(-1)[1])}${unit ? ' ' + unit : ''}` : `${x.name}: no data`);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${last.join(', ') || 'no data'}` });
  frame(svg, yMax, yMin);
  svg.append(s('text', { x: L, y: H - 8 }, clock(x0)));
  svg.append(s('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, clock(x1)));
  if (threshold !== undefined) {
    svg.append(s('line', { class: 'threshold', x1: L, x2: W - R, y1: sy(threshold), y2: sy(threshold) }));
  }
  series.forEach((x, i) => {
    if (!x.points.length) return;
    const d = x.points.map((p, j) => `${j ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
    svg.append(s('path', { class: `line c${i % 6}`, d }));
    if (x.points.length === 1) {
      svg.append(s('circle', { class: `c${i % 6}`, cx: sx(x.points[0][0]), cy: sy(x.points[0][1]), r: 3 }));
    }
  });
  if (!all.length) svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'waiting for data'));
  return figure(title, svg, legend(series.map(x => x.name)));
}

/**
 * A bar chart of [{label, value, cls}] (cls e.g. 'drifted'), with an
 * optional dashed threshold line.
 */
export function barChart(bars, { title = 'chart', threshold } = {}) {
  let yMax = Math.max(0, ...bars.map(b => b.value), threshold ?? 0);
  if (!(yMax > 0)) yMax = 1;
  yMax *= 1.1;
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img',
    'aria-label': `${title}: ${bars.map(b => `${b.label} ${short(b.value)}`).join(', ') || 'no data'}` });
  frame(svg, yMax, 0);
  const sy = y => T + (H - T - B) * (1 - y / yMax);
  const slot = (W - L - R) / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const x = L + slot * i + slot * 0.15;
    const y = sy(b.value);
    svg.append(s('rect', { class: `bar ${b.cls || 'c0'}`, x, y, width: slot * 0.7, height: Math.max(0, H - B - y) },
      s('title', {}, `${b.label}: ${short(b.value)}`)));
    svg.append(s('text', { x: x + slot * 0.35, y: H - 10, 'text-anchor': 'middle' }, b.label.length > 14 ? b.label.slice(0, 13) + '…' : b.label));
  });
  if (threshold !== undefined) {
    svg.append(s('line', { class: 'threshold', x1: L, x2: W - R, y1: sy(threshold), y2: sy(threshold) }));
  }
  return figure(title, svg);
}

/** Points over time per name, the newest `keep` of each. */
export class Series {
  constructor(keep = 150) { this.keep = keep; this.map = new Map(); }
  add(name, value, at = Date.now()) {
    if (value === null || value === undefined || !Number.isFinite(value)) return;
    if (!this.map.has(name)) this.map.set(name, []);
    const pts = this.map.get(name);
    pts.push([at, value]);
    if (pts.length > this.keep) pts.shift();
  }
  list(names) {
    return (names || [...this.map.keys()]).map(name => ({ name, points: this.map.get(name) || [] }));
  }
}

/** The dot timeline of a rollout's checks: pass / fail / inconclusive over time. */
export function checkTimeline(checks, { title = 'checks' } = {}) {
  const h = 70, L = 80;
  const svg = s('svg', { class: 'chart checks', viewBox: `0 0 ${W} ${h}`, role: 'img',
    'aria-label': `${title}: ${['pass', 'fail', 'inconclusive'].map(r => `${checks.filter(c => c.result === r).length} ${r}`).join(', ')}` });
  const ts = checks.map(c => c.at_us / 1000);
  let x0 = Math.min(...ts), x1 = Math.max(...ts);
  if (!checks.length) { x1 = Date.now(); x0 = x1 - 60000; }
  if (x1 - x0 < 1000) x0 = x1 - 1000;
  const sx = x => L + (W - L - R) * (x - x0) / (x1 - x0);
  const rows = { pass: 14, inconclusive: 30, fail: 46 };
  for (const [r, y] of Object.entries(rows)) {
    svg.append(s('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, r));
    svg.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: y, y2: y }));
  }
  for (const c of checks) {
    svg.append(s('circle', { class: c.result, cx: sx(c.at_us / 1000).toFixed(1), cy: rows[c.result] ?? 30, r: 4 },
      s('title', {}, `${clock(c.at_us / 1000)} ${c.result}: ${c.message}`)));
  }
  svg.append(s('text', { x: L, y: h - 4 }, clock(x0)));
  svg.append(s('text', { x: W - R, y: h - 4, 'text-anchor': 'end' }, clock(x1)));
  return figure(title, svg);
}

/**
 * A histogram of two or more series over the same bins, bars side by side
 * per bin. `bins`: [{label, values: [per series], detail}] (values as shares
 * 0..1, drawn as percentages); `ticks`: the labels under the bins' bounds
 * (bins.length + 1 of them, '' for none); `series`: the series' names.
 */
export function histogram(bins, { title = 'histogram', series = [], ticks = [] } = {}) {
  const b0 = 34;
  const all = bins.flatMap(b => b.values);
  let yMax = Math.max(0, ...all);
  if (!(yMax > 0)) yMax = 1;
  yMax *= 1.1;
  const pctLabel = v => `${+(v * 100).toFixed(1)}%`;
  const svg = s('svg', { class: 'chart histogram', viewBox: `0 0 ${W} ${H + b0 - B}`, role: 'img',
    'aria-label': `${title}: ${bins.map(b => `${b.label}: ${b.values.map((v, i) => `${series[i] ?? i} ${pctLabel(v)}`).join(', ')}`).join('; ') || 'no data'}` });
  const base = H - B;
  for (let i = 0; i <= 4; i++) {
    const y = T + (base - T) * (1 - i / 4);
    svg.append(s('line', { class: 'gridline', x1: L, x2: W - R, y1: y, y2: y }));
    svg.append(s('text', { x: L - 4, y: y + 3, 'text-anchor': 'end' }, pctLabel(yMax * i / 4)));
  }
  svg.append(s('line', { class: 'axis', x1: L, x2: L, y1: T, y2: base }));
  svg.append(s('line', { class: 'axis', x1: L, x2: W - R, y1: base, y2: base }));
  const sy = y => T + (base - T) * (1 - y / yMax);
  const slot = (W - L - R) / Math.max(1, bins.length);
  const n = Math.max(1, series.length, ...bins.map(b => b.values.length));
  const bar = slot * 0.8 / n;
  bins.forEach((b, i) => {
    const g = s('g', { class: 'bin', 'data-bin': i });
    b.values.forEach((v, j) => {
      const x = L + slot * i + slot * 0.1 + bar * j;
      const y = sy(v);
      g.append(s('rect', { class: `bar c${j % 6}`, x: x.toFixed(1), y: y.toFixed(1), width: bar.toFixed(1), height: Math.max(0, base - y).toFixed(1) },
        s('title', {}, `${b.label}: ${series[j] ?? j} ${pctLabel(v)}${b.detail ? ` (${b.detail[j]})` : ''}`)));
    });
    svg.append(g);
  });
  // The bounds under the bins, every other one when they would crowd.
  const step = slot < 34 ? 2 : 1;
  ticks.forEach((t, i) => {
    if (!t || i % step) return;
    const x = L + slot * i;
    svg.append(s('line', { class: 'axis', x1: x, x2: x, y1: base, y2: base + 4 }));
    svg.append(s('text', { x, y: base + 14 + (i % (2 * step) ? 10 : 0), 'text-anchor': 'middle' }, t));
  });
  return figure(title, svg, legend(series));
}
