// Overview: the roles that are up, the models being served, and live
// request rate, p99 and error rate (the monitoring role's windows; without
// the scope to read them, rates from the inference statistics).

import { api, can, canAny, session } from './api.js';
import { h, fill, table, badge, num, pct } from './dom.js';
import { lineChart, Series } from './chart.js';
import { statsDelta } from './stats.js';

export async function render(ctx) {
  const tiles = {
    rps: h('div.value#overview-rps', '—'),
    p99: h('div.value#overview-p99', '—'),
    errors: h('div.value#overview-errors', '—'),
  };
  const roles = h('div#roles'), models = h('div#served'), charts = h('div.grid#overview-charts'), live = h('div#live-models');
  const useWindows = canAny('registry:read', 'rollouts:admin') && (!session.roles || session.roles.includes('monitoring'));
  fill(ctx.el,
    h('h1', 'Overview'),
    h('div.tiles',
      h('div.tile', tiles.rps, h('div.label', 'requests / s')),
      h('div.tile', tiles.p99, h('div.label', useWindows ? 'p99 latency (ms, worst model)' : 'mean latency (ms)')),
      h('div.tile', tiles.errors, h('div.label', 'error rate'))),
    h('section', h('h2', 'Live traffic'), charts, live),
    h('div.grid',
      h('section', h('h2', 'Roles'), roles),
      h('section', h('h2', 'Models served'), models)));

  const rolesDoc = await api('/v1/gateway/roles');
  fill(roles, table([
    { label: 'Role', value: r => r.role },
    { label: 'Where', value: r => r.location === 'local' ? 'this process' : h('code', r.location) },
    { label: 'State', value: r => badge(r.up ? 'up' : 'down') },
  ], rolesDoc.roles, { id: 'roles-table' }));
  performance.mark('mlserve:first-data');

  if (can('infer')) {
    ctx.every(5000, async () => {
      const index = await api('/v2/repository/index', { method: 'POST', body: {} });
      fill(models, table([
        { label: 'Model', value: m => can('infer') ? h('a', { href: `#/serving/${encodeURIComponent(m.name)}` }, m.name) : m.name },
        { label: 'Version', value: m => m.version ?? '' },
        { label: 'State', value: m => badge(m.state) },
        { label: 'Reason', value: m => m.reason ?? '' },
      ], index, { id: 'served-table', empty: 'No model.' }));
    });
  } else {
    fill(models, h('p.muted', "This credential lacks the scope 'infer' to list the models served."));
  }

  const series = { rps: new Series(), p99: new Series(), err: new Series() };
  const draw = (rows, p99Label) => {
    fill(charts,
      lineChart(series.rps.list(), { title: 'Requests per second', unit: '/s' }),
      lineChart(series.p99.list(), { title: p99Label, unit: 'ms' }),
      lineChart(series.err.list().map(s => ({ ...s, points: s.points.map(([t, v]) => [t, v * 100]) })),
        { title: 'Error rate (%)', unit: '%' }));
    fill(live, rows);
  };

  if (useWindows) {
    await ctx.every(2000, async () => {
      const { windows } = await api('/v1/monitoring/windows');
      const byModel = new Map();
      for (const w of windows) {
        const m = byModel.get(w.model) || { model: w.model, rps: 0, requests: 0, errors: 0, p99: 0 };
        m.rps += w.requests_per_second; m.requests += w.requests; m.errors += w.server_errors;
        m.p99 = Math.max(m.p99, w.p99_ms);
        byModel.set(w.model, m);
      }
      const all = [...byModel.values()];
      const rps = all.reduce((a, m) => a + m.rps, 0);
      const reqs = all.reduce((a, m) => a + m.requests, 0);
      const errs = all.reduce((a, m) => a + m.errors, 0);
      const p99 = all.reduce((a, m) => Math.max(a, m.p99), 0);
      tiles.rps.textContent = num(rps, 3);
      tiles.p99.textContent = reqs ? num(p99, 3) : '—';
      tiles.errors.textContent = reqs ? pct(errs / reqs) : '—';
      const t = Date.now();
      series.rps.add('all models', rps, t);
      for (const m of all) {
        series.p99.add(m.model, m.p99, t);
        series.err.add(m.model, m.requests ? m.errors / m.requests : 0, t);
      }
      draw(table([
        { label: 'Model', value: w => w.model },
        { label: 'Version', value: w => w.version },
        { label: 'Requests / s', value: w => num(w.requests_per_second, 3), num: true },
        { label: 'p50 (ms)', value: w => num(w.p50_ms, 3), num: true },
        { label: 'p99 (ms)', value: w => num(w.p99_ms, 3), num: true },
        { label: 'Error rate', value: w => pct(w.error_rate), num: true },
      ], windows, { id: 'windows-table', caption: 'Per version, over the monitoring window', empty: 'No traffic in the window.' }), 'p99 latency per model (ms)');
    });
  } else if (can('infer')) {
    let before = null;
    await ctx.every(2000, async () => {
      const now = { at: Date.now(), stats: (await api('/v2/models/stats')).model_stats };
      if (before) {
        const d = statsDelta(before, now);
        let n = 0, fails = 0;
        for (const m of d) {
          series.rps.add(m.name, m.rps, now.at); series.p99.add(m.name, m.latencyMs, now.at);
          series.err.add(m.name, m.errorRate, now.at); n += m.rps; fails += m.failRps;
        }
        tiles.rps.textContent = num(n, 3);
        tiles.errors.textContent = n ? pct(fails / (n + fails)) : '—';
        const worst = Math.max(0, ...d.map(m => m.latencyMs || 0));
        tiles.p99.textContent = n ? num(worst, 3) : '—';
        draw(h('p.muted', 'Without the monitoring windows (the monitoring role and the scope registry:read), rates and mean latency come from the inference statistics.'), 'Mean latency per model (ms)');
      }
      before = now;
    });
  }
}
