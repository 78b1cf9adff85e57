// Features: entities, feature views and pipelines; an online lookup (its
// values, their event times and the lookup's latency as the browser saw
// it); the lookups the features role served (rate, p50 and p99 from its
// latency histogram, polled); each view's freshness (how far its last materialize reached, when
// it ran, its newest event); drift per feature of each served model (PSI
// against its threshold, and the reference and current shares per bin).

import { api, can, canAny, seg, session } from './api.js';
import { h, fill, table, badge, time, ago, num, pct, errorLine, labelled, select } from './dom.js';
import { barChart, histogram, lineChart, Series } from './chart.js';
import { histogramQuantile } from './stats.js';

export async function render(ctx) {
  const [{ entities }, { feature_views: views, freshness = [] }, pipes] = await Promise.all([
    api('/v1/features/entities'), api('/v1/features/views'),
    api('/v1/features/pipelines').catch(() => ({ pipelines: [] })),
  ]);
  const drift = h('div#drift');
  const fresh = new Map(freshness.map(f => [f.view, f]));
  fill(ctx.el, h('h1', 'Features'),
    h('div.grid',
      h('section', h('h2', 'Entities'), table([
        { label: 'Entity', value: e => h('strong', e.name) },
        { label: 'Join keys', value: e => e.join_keys.join(', ') },
        { label: 'Type', value: e => e.value_type },
        { label: 'Version', value: e => e.version, num: true },
        { label: 'Description', value: e => e.description },
      ], entities, { id: 'entities-table', empty: 'No entity.' })),
      h('section', h('h2', 'Pipelines'), table([
        { label: 'Model', value: p => p.model },
        { label: 'Kind', value: p => p.kind },
        { label: 'Spec', value: p => h('code', JSON.stringify(p.spec).slice(0, 160)) },
      ], pipes.pipelines, { id: 'pipelines-table', empty: 'No pipeline.' }))),
    h('section', h('h2', 'Feature views'), table([
      { label: 'View', value: v => h('strong', v.name) },
      { label: 'Entities', value: v => v.entities.join(', ') },
      { label: 'Fields', value: v => v.fields.map(f => `${f.name}: ${f.dtype}`).join(', ') },
      { label: 'Max age', value: v => v.ttl_secs ? `${v.ttl_secs} s` : 'none', num: true },
      { label: 'Online', value: v => v.online ? 'yes' : 'no' },
      { label: 'Source', value: v => v.source },
      { label: 'Version', value: v => v.version, num: true },
      { label: 'Last materialize', value: v => materialized(fresh.get(v.name)) },
      { label: 'Newest event', value: v => when(fresh.get(v.name)?.newest_event_us, 'none', 'newest-event') },
    ], views, { id: 'views-table', empty: 'No feature view.', rowAttrs: v => ({ 'data-view': v.name }) })),
    h('section', h('h2', 'Online lookup and freshness'), lookup(views, entities)),
    h('section', h('h2', 'Online lookups served'), h('p.muted', 'Every lookup the features role answered (the gateway\'s predict calls included), from its latency histogram every 2 s: lookups per second, and the p50 and p99 between two readings.'), served(ctx)),
    h('section', h('h2', 'Drift per feature'), drift));

  // The ages ("3 min ago") and the freshness itself, kept current.
  const viewsTable = ctx.el.querySelector('#views-table');
  let first = true;
  ctx.every(15000, async () => {
    if (first) { first = false; return; }
    const { freshness: now = [] } = await api('/v1/features/views');
    for (const f of now) {
      const row = [...viewsTable.querySelectorAll('tr[data-view]')].find(tr => tr.dataset.view === f.view);
      if (!row) continue;
      fill(row.cells[7], materialized(f));
      fill(row.cells[8], when(f.newest_event_us, 'none', 'newest-event'));
    }
  });

  if (session.roles && !session.roles.includes('monitoring')) {
    fill(drift, h('p.muted#no-drift', 'Drift reports come from the monitoring role, which this gateway does not reach.'));
    return;
  }
  if (!canAny('registry:read', 'rollouts:admin')) {
    fill(drift, h('p.muted#no-drift', "Drift reports need the scope 'registry:read'."));
    return;
  }
  let names = [];
  try {
    names = can('infer')
      ? [...new Set((await api('/v2/repository/index', { method: 'POST', body: {} })).map(m => m.name))]
      : (await api('/v1/registry/models?limit=500')).models.map(m => m.name);
  } catch { /* listed below as none */ }
  let last = '';
  await ctx.every(5000, async () => {
    const found = (await Promise.all(names.sort().map(n =>
      api(`/v1/monitoring/drift/${seg(n)}`).then(d => d.reports, () => [])))).flat();
    const text = JSON.stringify(found);
    if (text === last) return;
    last = text;
    // The bin tables left open stay open.
    const key = d => `${d.closest('.drift-report')?.dataset.model} ${d.closest('.drift-report')?.dataset.version} ${d.closest('[data-feature]')?.dataset.feature}`;
    const open = new Set([...drift.querySelectorAll('details[open]')].map(key));
    fill(drift, found.length ? found.map(report) : h('p.muted', 'No drift analysis yet (it needs served rows in the request log).'));
    for (const d of drift.querySelectorAll('details')) {
      if (open.has(key(d))) d.open = true;
    }
  });
}

/** A time (microseconds since the epoch, 0 for none) and its age, or `none`. */
function when(us, none, kind) {
  us = Number(us || 0);
  if (!us) return h('span.muted.when', { 'data-kind': kind, 'data-us': '0' }, none);
  return h('span.when', { 'data-kind': kind, 'data-us': String(us) },
    h('time', { datetime: new Date(us / 1000).toISOString() }, time(us)), ' ', h('span.ago', `(${ago(us)})`));
}

/** A view's last materialize: the event time it reached and when it ran. */
function materialized(f) {
  if (!f || !f.materialized_at_us) return when(0, 'never', 'materialized-to');
  return h('span.stack', h('span', 'events to ', when(f.materialized_to_us, 'none', 'materialized-to')),
    h('span', 'ran ', when(f.materialized_at_us, 'never', 'materialized-at')));
}

function report(r) {
  return h('div.drift-report', { 'data-model': r.model, 'data-version': r.version, 'data-analysed': String(r.analysed_at_us) },
    h('h3', `${r.model} version ${r.version} `, badge(r.state)),
    h('p.muted', `${r.current_rows} current rows (${time(r.current_from_us)} – ${time(r.current_to_us)}) against ${r.reference_rows} reference rows; analysed ${ago(r.analysed_at_us)}. Drifts at PSI ≥ ${num(r.psi_threshold)} with KS p-value < ${num(r.ks_alpha)}.`),
    r.features.length ? h('div.grid',
      table([
        { label: 'Feature', value: f => f.feature },
        { label: 'Kind', value: f => f.kind },
        { label: 'PSI', value: f => num(f.psi, 3), num: true },
        { label: 'KS', value: f => num(f.ks, 3), num: true },
        { label: 'p-value', value: f => num(f.p_value, 3), num: true },
        { label: 'Reference mean', value: f => num(f.reference_mean, 4), num: true },
        { label: 'Current mean', value: f => num(f.current_mean, 4), num: true },
        { label: 'Drifted', value: f => f.drifted ? badge('drifted') : 'no' },
      ], r.features, { rowAttrs: f => ({ 'data-feature': f.feature }) }),
      barChart(r.features.map(f => ({ label: f.feature, value: f.psi, cls: f.drifted ? 'c0 drifted' : 'c0' })),
        { title: `PSI per feature (${r.model} v${r.version})`, threshold: r.psi_threshold }))
      : null,
    r.features.some(f => f.bin_edges?.length) ? h('div.histograms',
      r.features.filter(f => f.bin_edges?.length).map(f => featureHistogram(r, f))) : null);
}

const edge = v => String(+Number(v).toPrecision(3));

/**
 * The bins of a feature: under the first edge, then up to and including
 * each further edge, then over the last one.
 */
function bins(edges) {
  const out = [`< ${edge(edges[0])}`];
  for (let i = 1; i < edges.length; i++) out.push(`${edge(edges[i - 1])} – ${edge(edges[i])}`);
  out.push(`> ${edge(edges.at(-1))}`);
  return out;
}

/** One feature's reference and current shares per bin, a chart and its table. */
function featureHistogram(r, f) {
  const labels = bins(f.bin_edges);
  const total = xs => xs.reduce((a, b) => a + b, 0) || 1;
  const rt = total(f.reference_counts), ct = total(f.current_counts);
  const share = (n, t) => n / t;
  const rows = labels.map((label, i) => ({ label, ref: f.reference_counts[i] ?? 0, cur: f.current_counts[i] ?? 0 }));
  const title = `${f.feature} (${r.model} v${r.version}): share of rows per bin, reference and current · PSI ${num(f.psi, 3)}${f.drifted ? ', drifted' : ''}`;
  return h('div.histogram-of', { 'data-feature': f.feature },
    histogram(rows.map(x => ({ label: x.label, values: [share(x.ref, rt), share(x.cur, ct)], detail: [`${x.ref} rows`, `${x.cur} rows`] })),
      { title, series: ['reference', 'current'], ticks: ['', ...f.bin_edges.map(edge), ''] }),
    h('details', h('summary', `Bins of ${f.feature}`), table([
      { label: 'Bin', value: x => x.label },
      { label: 'Reference rows', value: x => x.ref, num: true },
      { label: 'Reference share', value: x => pct(share(x.ref, rt)), num: true },
      { label: 'Current rows', value: x => x.cur, num: true },
      { label: 'Current share', value: x => pct(share(x.cur, ct)), num: true },
    ], rows, { caption: `Rows per bin of ${f.feature}`, rowAttrs: x => ({ 'data-reference': x.ref, 'data-current': x.cur }) })));
}

function lookup(views, entities) {
  const online = views.filter(v => v.online);
  if (!online.length) return h('p.muted', 'No online feature view.');
  const view = select(online.map(v => [v.name, v.name]), online[0].name);
  const keys = h('span.row');
  const out = h('div#lookup-result'), err = errorLine('lookup-error'), chart = h('div#lookup-latency');
  const latency = new Series(50);
  const keyInputs = () => {
    const v = online.find(x => x.name === view.value);
    const joins = v.entities.flatMap(e => entities.find(x => x.name === e)?.join_keys || [e]);
    fill(keys, joins.map(k => labelled(`lookup-key-${k}`, k, h('input', { name: k, size: 10, required: true }))));
  };
  view.addEventListener('change', keyInputs);
  keyInputs();
  const form = h('form#lookup', labelled('lookup-view', 'View', view), keys, h('button', { type: 'submit' }, 'Look up'), err, out, chart);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    err.textContent = '';
    const v = online.find(x => x.name === view.value);
    const ent = {};
    for (const input of keys.querySelectorAll('input')) {
      const raw = input.value.trim();
      ent[input.name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    }
    const features = v.fields.map(f => `${v.name}:${f.name}`);
    try {
      const t0 = performance.now();
      const res = await api('/v1/features/online', { method: 'POST', body: { features, entities: [{ keys: ent }] } });
      const ms = performance.now() - t0;
      latency.add('lookup round trip', ms);
      const values = res.rows[0]?.values || [];
      const newest = Math.max(0, ...values.map(x => x.event_ts || 0));
      fill(out, table([
        { label: 'Feature', value: ([f]) => f },
        { label: 'Value', value: ([, x]) => x.value === null ? '—' : JSON.stringify(x.value) },
        { label: 'Status', value: ([, x]) => badge(x.status) },
        { label: 'Event time', value: ([, x]) => time(x.event_ts) },
      ], res.features.map((f, i) => [f, values[i]]), { id: 'lookup-table' }),
      h('p.muted', `Newest event ${newest ? `${time(newest)} (${ago(newest)})` : 'none'} · round trip ${num(ms, 3)} ms`));
      fill(chart, lineChart(latency.list(), { title: 'Online lookup latency (browser round trip, ms)', unit: 'ms' }));
    } catch (e) { err.textContent = e.message; }
  });
  return form;
}

/** The lookups the features role served: rate, p50 and p99 over time. */
function served(ctx) {
  const out = h('div.grid#lookup-served'), totals = h('p.muted#lookup-served-totals');
  const rate = new Series(), latency = new Series();
  let before = null;
  ctx.every(2000, async () => {
    const s = await api('/v1/features/lookup-stats');
    const now = { at: Date.now(), total: s.lookups, seconds: s.seconds, buckets: s.buckets };
    // A reading below the last one came from another replica or a restart.
    if (before && now.total >= before.total) {
      const dt = Math.max(0.001, (now.at - before.at) / 1000);
      rate.add('lookups', (now.total - before.total) / dt, now.at);
      for (const [label, q] of [['p50', 0.5], ['p99', 0.99]]) {
        const v = histogramQuantile(q, before, now);
        if (v !== null) latency.add(label, v * 1000, now.at);
      }
    }
    before = now;
    fill(out,
      lineChart(rate.list(), { title: 'Lookups served per second', unit: '/s' }),
      lineChart(latency.list(), { title: 'Online lookup latency in the features role (ms)', unit: 'ms' }));
    fill(totals, `${s.lookups} lookups of ${s.entities} entities since the role started` +
      (s.lookups ? `, ${num(s.seconds / s.lookups * 1000, 3)} ms each on average` : ''));
  });
  return h('div', totals, out);
}
