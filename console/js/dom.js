// Small DOM helpers shared by the pages: element building, tables, number
// and time formatting, state badges and the confirmation dialog.

/** h('tag.class#id', {attr: value, onclick: fn}, ...children): an element. */
export function h(spec, attrs, ...children) {
  const [tag, ...rest] = spec.split(/(?=[.#])/);
  const el = document.createElement(tag || 'div');
  for (const part of rest) {
    if (part[0] === '.') el.classList.add(part.slice(1));
    else el.id = part.slice(1);
  }
  // A first child that is not an attribute object (0 and '' included) is a child.
  if (attrs !== null && attrs !== undefined && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

/** Appends strings, numbers, nodes and nested arrays (null is skipped). */
export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/**
 * A table: columns are [{label, value: row => text or node, num: bool}].
 * `empty` is shown in one cell when there are no rows.
 */
export function table(columns, rows, { caption, id, empty = 'None.', rowAttrs } = {}) {
  const head = h('tr', columns.map(c => h('th' + (c.num ? '.num' : ''), { scope: 'col' }, c.label)));
  const body = rows.length
    ? rows.map(r => h('tr', rowAttrs ? rowAttrs(r) : null,
      columns.map(c => h('td' + (c.num ? '.num' : ''), c.value(r)))))
    : [h('tr', h('td.muted', { colSpan: columns.length }, empty))];
  return h('table', { id }, caption ? h('caption', caption) : null, h('thead', head), h('tbody', body));
}

/** A labelled state badge (colour by class, the word itself as text). */
export function badge(state) {
  return h('span.badge', { class: `badge s-${state}` }, state);
}

const pad = n => String(n).padStart(2, '0');

/** Microseconds since the epoch as local "YYYY-MM-DD HH:MM:SS" ("" for 0). */
export function time(us) {
  if (!us) return '';
  const d = new Date(Number(us) / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** "3 s ago", "5 min ago" for microseconds since the epoch. */
export function ago(us) {
  if (!us) return '';
  const s = Math.max(0, (Date.now() - Number(us) / 1000) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** A number with at most `digits` significant decimals. */
export function num(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  const n = Number(v);
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toPrecision(digits)));
}

/** Bytes as B / KiB / MiB. */
export function bytes(n) {
  n = Number(n);
  if (n < 1024) return `${n} B`;
  if (n < 1048576) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(1)} MiB`;
}

/** A percentage of a 0..1 share. */
export const pct = v => (v === null || v === undefined ? '—' : `${num(v * 100, 3)}%`);

/**
 * Asks for confirmation in the page's <dialog>; resolves true when the
 * user confirmed. Escape and Cancel resolve false.
 */
export function confirmDialog(title, text, okLabel = 'Confirm') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  const opener = document.activeElement;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise(resolve => {
    dialog.addEventListener('close', () => {
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === 'ok');
    }, { once: true });
  });
}

/** A status line for errors of an action (role=alert so it is announced). */
export function errorLine(id) {
  return h('p.error', { id, role: 'alert' });
}

/** A labelled form control: returns [label, control]. */
export function labelled(id, text, control) {
  control.id = id;
  return [h('label', { for: id }, text), control];
}

/** A <select> of options [value, text] with `selected` chosen. */
export function select(options, selected) {
  return h('select', options.map(([v, t]) => h('option', { value: v, selected: String(v) === String(selected) }, t)));
}

/**
 * After an action redrew its buttons: focus the first one left in
 * `region`, else the page's heading, so the keyboard does not fall back to
 * the top of the document.
 */
export function focusAfter(page, region) {
  const next = page.querySelector(`${region} button`) || page.querySelector('h1');
  if (!next) return;
  if (next.tagName === 'H1') next.tabIndex = -1;
  next.focus();
}
