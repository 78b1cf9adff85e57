// Models: the registry's models; per model its versions (metrics, lineage,
// files with sha256), aliases with their history, two versions' metrics side
// by side, and moving an alias (after a confirmation).

import { api, can, seg } from './api.js';
import { h, fill, table, badge, time, num, bytes, confirmDialog, errorLine, labelled, select } from './dom.js';
import { barChart } from './chart.js';

export async function render(ctx, name) {
  if (name) return model(ctx, name);
  const { models } = await api('/v1/registry/models?limit=500');
  fill(ctx.el, h('h1', 'Models'), h('section', table([
    { label: 'Model', value: m => h('a', { href: `#/models/${seg(m.name)}` }, m.name) },
    { label: 'Description', value: m => m.description },
    { label: 'Latest version', value: m => m.latest_version, num: true },
    { label: 'Aliases', value: m => Object.entries(m.aliases || {}).sort().map(([a, v]) => `${a} → ${v}`).join(', ') },
    { label: 'Updated', value: m => time(m.updated_at_us) },
  ], models, { id: 'models-table', empty: 'No registered model.' })));
}

const tags = t => Object.entries(t || {}).sort().map(([k, v]) => `${k}=${v}`).join(', ');

async function model(ctx, name) {
  const base = `/v1/registry/models/${seg(name)}`;
  const [m, { versions }, { aliases }, { moves }] = await Promise.all([
    api(base), api(`${base}/versions?limit=500`), api(`${base}/aliases`), api(`${base}/alias-history?limit=500`),
  ]);
  const compare = h('div#compare');
  fill(ctx.el,
    h('p', h('a', { href: '#/models' }, '← Models')),
    h('h1', `Model ${m.name}`),
    m.description ? h('p', m.description) : null,
    h('p.muted', `Tags: ${tags(m.tags) || 'none'} · created ${time(m.created_at_us)}`),
    h('div.grid',
      h('section', h('h2', 'Aliases'), aliasTable(aliases), can('registry:write') ? moveForm(ctx, name, versions, aliases) : null),
      h('section', h('h2', 'Alias history'), historyTable(moves))),
    h('section', h('h2', 'Compare versions'), compareForm(versions, compare), compare),
    h('section', h('h2', 'Versions'), versionsTable(versions), versions.map(versionDetails)));
}

function aliasTable(aliases) {
  return table([
    { label: 'Alias', value: a => h('strong', a.alias) },
    { label: 'Version', value: a => a.version, num: true },
    { label: 'Moved by', value: a => a.updated_by },
    { label: 'At', value: a => time(a.updated_at_us) },
  ], aliases, { id: 'aliases-table', empty: 'No alias.' });
}

function historyTable(moves) {
  return table([
    { label: 'At', value: m => time(m.at_us) },
    { label: 'Alias', value: m => m.alias },
    { label: 'From', value: m => m.from_version ?? '—', num: true },
    { label: 'To', value: m => m.to_version ?? 'deleted', num: true },
    { label: 'By', value: m => m.actor },
  ], [...moves].reverse(), { id: 'history-table', caption: 'Newest first', empty: 'No move yet.' });
}

function versionsTable(versions) {
  return table([
    { label: 'Version', value: v => String(v.version) },
    { label: 'Status', value: v => badge(v.status) },
    { label: 'Aliases', value: v => (v.aliases || []).join(', ') },
    { label: 'Metrics', value: v => Object.entries(v.metrics || {}).sort().map(([k, x]) => `${k}=${num(x)}`).join(', ') },
    { label: 'Created by', value: v => v.created_by },
    { label: 'Created', value: v => time(v.created_at_us) },
  ], versions, { id: 'versions-table', empty: 'No version.' });
}

function versionDetails(v) {
  const l = v.lineage || {};
  return h('details', { id: `version-${v.version}`, 'data-version': v.version },
    h('summary', `Version ${v.version} — ${v.files.length} file(s)${v.description ? ': ' + v.description : ''}`),
    h('h3', 'Lineage'),
    table([
      { label: 'Training run', value: () => l.training_run ? h('a', { href: `#/training/runs/${seg(l.training_run)}` }, l.training_run) : '—' },
      { label: 'Dataset snapshot', value: () => l.dataset_snapshot || '—' },
      { label: 'Code version', value: () => l.code_version ? h('code', l.code_version) : '—' },
    ], [l], { rowAttrs: () => ({ class: 'lineage' }) }),
    h('h3', 'Metrics'),
    table([
      { label: 'Metric', value: ([k]) => k },
      { label: 'Value', value: ([, x]) => num(x, 6), num: true },
    ], Object.entries(v.metrics || {}).sort(), { empty: 'No metric.' }),
    h('h3', 'Files'),
    table([
      { label: 'Path', value: f => h('code', f.path) },
      { label: 'Size', value: f => bytes(f.size), num: true },
      { label: 'sha256', value: f => h('code.sha', f.sha256) },
    ], v.files, { rowAttrs: () => ({ class: 'file' }) }),
    v.tags && Object.keys(v.tags).length ? h('p.muted', `Tags: ${tags(v.tags)}`) : null);
}

function compareForm(versions, out) {
  const opts = versions.map(v => [v.version, `version ${v.version}`]);
  const a = select(opts, versions[1]?.version ?? versions[0]?.version);
  const b = select(opts, versions[0]?.version);
  const draw = () => {
    const va = versions.find(v => String(v.version) === a.value);
    const vb = versions.find(v => String(v.version) === b.value);
    if (!va || !vb) return fill(out, h('p.muted', 'No version to compare.'));
    const names = [...new Set([...Object.keys(va.metrics || {}), ...Object.keys(vb.metrics || {})])].sort();
    const get = (v, k) => (v.metrics || {})[k];
    fill(out, table([
      { label: 'Metric', value: k => k },
      { label: `Version ${va.version}`, value: k => num(get(va, k), 6), num: true },
      { label: `Version ${vb.version}`, value: k => num(get(vb, k), 6), num: true },
      { label: 'Difference', value: k => (get(va, k) === undefined || get(vb, k) === undefined) ? '—' : num(get(vb, k) - get(va, k), 4), num: true },
    ], names, { id: 'compare-table', empty: 'Neither version has metrics.' }),
    names.length ? h('div.grid', names.slice(0, 6).map(k => barChart(
      [{ label: `v${va.version}`, value: get(va, k) ?? 0 }, { label: `v${vb.version}`, value: get(vb, k) ?? 0, cls: 'c1' }],
      { title: k }))) : null);
  };
  a.addEventListener('change', draw);
  b.addEventListener('change', draw);
  queueMicrotask(draw);
  return h('div.row', labelled('compare-a', 'Version', a), labelled('compare-b', 'against version', b));
}

function moveForm(ctx, name, versions, aliases) {
  const alias = h('input', { list: 'alias-names', required: true, value: aliases[0]?.alias || 'production', size: 14 });
  const version = select(versions.map(v => [v.version, `version ${v.version}`]), versions[0]?.version);
  const err = errorLine('move-error');
  const form = h('form.row#move-alias',
    h('datalist#alias-names', aliases.map(a => h('option', { value: a.alias }))),
    labelled('move-alias-name', 'Alias', alias),
    labelled('move-alias-version', 'to', version),
    h('button#move-alias-button', { type: 'submit' }, 'Move alias…'),
    err);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    err.textContent = '';
    const a = alias.value.trim(), v = Number(version.value);
    const now = aliases.find(x => x.alias === a);
    const what = now ? `from version ${now.version} to version ${v}` : `(new) to version ${v}`;
    if (!await confirmDialog(`Move alias ${a}?`, `The alias ${a} of ${name} moves ${what}. Everything that follows it (serving, rollouts) follows the move.`, 'Move alias')) return;
    try {
      await api(`/v1/registry/models/${seg(name)}/aliases/${seg(a)}`, { method: 'PUT', body: { version: v } });
      await render(ctx, name);
      document.getElementById('move-alias-button')?.focus();
    } catch (e) {
      err.textContent = e.message;
    }
  });
  return form;
}
