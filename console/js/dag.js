// A run's DAG as SVG: one column per depth, a node per step instance
// (coloured by state, a link that opens its logs), edges from dependencies.

const NS = 'http://www.w3.org/2000/svg';
const NW = 160, NH = 44, GX = 56, GY = 14, PAD = 10;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

/** Depth of each step: 0 without dependencies, else one more than its deepest dependency; `last` (the exit handler) after all. */
export function layers(steps, last) {
  const depth = new Map();
  const byTemplate = t => steps.filter(x => x.template === t);
  const visit = (step, seen = new Set()) => {
    if (depth.has(step.name)) return depth.get(step.name);
    if (seen.has(step.name)) return 0;
    seen.add(step.name);
    let d = 0;
    for (const dep of step.dependencies || []) for (const up of byTemplate(dep)) d = Math.max(d, visit(up, seen) + 1);
    depth.set(step.name, d);
    return d;
  };
  steps.forEach(x => visit(x));
  if (last) {
    const max = Math.max(0, ...[...depth.entries()].filter(([n]) => !steps.find(x => x.name === n && x.template === last)).map(([, d]) => d));
    for (const x of steps) if (x.template === last) depth.set(x.name, max + 1);
  }
  return depth;
}

/** The SVG of `steps`; `href(step)` is each node's link, `selected` a step name. */
export function dag(steps, { href, selected, exitHandler, title = 'Run DAG' }) {
  const depth = layers(steps, exitHandler);
  const columns = [];
  for (const x of steps) (columns[depth.get(x.name)] ||= []).push(x);
  const rows = Math.max(1, ...columns.map(c => (c || []).length));
  const width = PAD * 2 + columns.length * NW + Math.max(0, columns.length - 1) * GX;
  const height = PAD * 2 + rows * NH + (rows - 1) * GY;
  const pos = new Map();
  columns.forEach((col, i) => (col || []).forEach((x, j) => {
    const offset = (rows - col.length) * (NH + GY) / 2;
    pos.set(x.name, { x: PAD + i * (NW + GX), y: PAD + offset + j * (NH + GY) });
  }));
  const svg = s('svg', { class: 'dag', viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': title, id: 'dag' });
  svg.append(s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    s('path', { d: 'M0,0L10,5L0,10z', fill: '#9aa3b2' }))));
  for (const x of steps) {
    const to = pos.get(x.name);
    for (const dep of x.dependencies || []) for (const up of steps.filter(u => u.template === dep)) {
      const from = pos.get(up.name);
      const x1 = from.x + NW, y1 = from.y + NH / 2, x2 = to.x, y2 = to.y + NH / 2, mx = (x1 + x2) / 2;
      svg.append(s('path', { class: 'edge', d: `M${x1},${y1}C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'data-from': up.name, 'data-to': x.name }));
    }
  }
  for (const x of steps) {
    const p = pos.get(x.name);
    const label = x.name.length > 22 ? x.name.slice(0, 21) + '…' : x.name;
    const state = x.attempt > 1 ? `${x.state} · attempt ${x.attempt}` : x.state;
    const a = s('a', { href: href(x), class: `node n-${x.state}${x.name === selected ? ' selected' : ''}`, 'data-step': x.name, 'data-state': x.state,
      'aria-label': `step ${x.name}: ${x.state}${x.name === selected ? ' (logs shown)' : ''}` },
    s('title', {}, `${x.name}: ${x.state}${x.message ? ' — ' + x.message : ''}`),
    s('rect', { x: p.x, y: p.y, width: NW, height: NH }),
    s('text', { x: p.x + 10, y: p.y + 18 }, label),
    s('text', { class: 'state', x: p.x + 10, y: p.y + 34 }, state));
    svg.append(a);
  }
  svg.style.maxWidth = `${Math.max(width, 320)}px`;
  return svg;
}
