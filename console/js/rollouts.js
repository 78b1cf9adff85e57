// Rollouts: every rollout; per model the latest one with its current step
// and weights, each analysis check over time, the stable and canary windows
// over time, and pause / resume / promote / abort.

import { api, can, seg } from './api.js';
import { h, fill, table, badge, time, num, pct, confirmDialog, errorLine, focusAfter } from './dom.js';
import { lineChart, checkTimeline, Series } from './chart.js';

const ACTIVE = ['waiting', 'progressing', 'paused', 'promoting'];

// A check's record carries its measurements in its message only:
// "20 requests, error rate 0.00%, p99 0.789 ms; stable: 66 requests, ...".
const CHECK = /^(\d+) requests, error rate ([\d.]+)%, p99 ([\d.]+) ms; stable: (\d+) requests, error rate ([\d.]+)%, p99 ([\d.]+) ms/;

/** The measurements of the checks whose message has them (others are skipped). */
function checkValues(records) {
  return records.map(r => [r, CHECK.exec(r.message)]).filter(([, m]) => m).map(([r, m]) => ({
    at: r.at_us / 1000, canaryP99: Number(m[3]), stableP99: Number(m[6]),
  }));
}

export async function render(ctx, model) {
  if (model) return detail(ctx, model);
  const body = h('div#rollouts-list');
  fill(ctx.el, h('h1', 'Rollouts'), h('section', body));
  await ctx.every(3000, async () => {
    const { rollouts } = await api('/v1/monitoring/rollouts?limit=100');
    fill(body, table([
      { label: 'Rollout', value: r => h('a', { href: `#/rollouts/${seg(r.model)}` }, r.id) },
      { label: 'Model', value: r => r.model },
      { label: 'Stable → canary', value: r => `${r.stable || '—'} → ${r.canary}` },
      { label: 'State', value: r => badge(r.state) },
      { label: 'Step', value: r => `${Math.min(r.step + 1, r.steps.length)} / ${r.steps.length}` },
      { label: 'Canary weight', value: r => `${r.weight}%`, num: true },
      { label: 'Started', value: r => time(r.created_at_us) },
      { label: 'Reason', value: r => r.reason },
    ], rollouts, { id: 'rollouts-table', empty: 'No rollout yet.' }));
  });
}

async function detail(ctx, model) {
  const summary = h('div#rollout-summary'), steps = h('div#rollout-steps'), actions = h('div.row#rollout-actions');
  const checks = h('div#rollout-checks'), windows = h('div#rollout-windows'), charts = h('div.grid#rollout-charts');
  const records = h('div#rollout-records'), err = errorLine('rollout-error');
  fill(ctx.el,
    h('p', h('a', { href: '#/rollouts' }, '← Rollouts')),
    h('h1', `Rollout of ${model}`),
    h('section', summary, actions, err),
    h('div.grid', h('section', h('h2', 'Steps'), steps), h('section', h('h2', 'Analysis checks'), checks)),
    h('section', h('h2', 'Stable and canary'), windows, charts),
    h('section', h('h2', 'Record'), records));
  const series = { p99: new Series(), err: new Series(), rps: new Series() };
  let lastState = '', lastRecords = -1;

  const act = async (action, confirmText) => {
    err.textContent = '';
    if (confirmText && !await confirmDialog(`${action[0].toUpperCase() + action.slice(1)} the rollout of ${model}?`, confirmText, action[0].toUpperCase() + action.slice(1))) return;
    try {
      await api(`/v1/monitoring/rollouts/${seg(model)}/${action}`, { method: 'POST', body: { reason: `${action} from the console` } });
      lastState = '';
      await refresh();
      focusAfter(ctx.el, '#rollout-actions');
    } catch (e) { err.textContent = e.message; }
  };

  const refresh = async () => {
    const st = await api(`/v1/monitoring/rollouts/${seg(model)}`);
    const r = st.rollout, a = r.analysis || {};
    fill(summary, h('dl.facts',
      h('dt', 'State'), h('dd#rollout-state', badge(r.state)),
      h('dt', 'Step'), h('dd#rollout-step', `${Math.min(r.step + 1, r.steps.length)} of ${r.steps.length}`),
      h('dt', 'Weights'), h('dd#rollout-weights', `stable v${r.stable || '—'} ${100 - r.weight}% · canary v${r.canary} ${r.weight}%`),
      h('dt', 'Failed checks'), h('dd', `${r.failed_checks} of ${a.threshold ?? '—'} allowed`),
      h('dt', 'Started by'), h('dd', r.started_by || '—'),
      r.reason ? [h('dt', 'Reason'), h('dd#rollout-reason', r.reason)] : null));
    fill(steps, table([
      { label: '#', value: ([, i]) => i + 1, num: true },
      { label: 'Canary weight', value: ([s]) => `${s.weight}%`, num: true },
      { label: 'Duration', value: ([s]) => `${num(s.duration_ms / 1000)} s`, num: true },
      { label: '', value: ([, i]) => i === r.step && ACTIVE.includes(r.state) ? badge('current') : (i < r.step ? 'done' : '') },
    ], r.steps.map((s, i) => [s, i]), { id: 'steps-table' }),
    h('p.muted', `Checks every ${num((a.interval_ms || 0) / 1000)} s: error rate ≤ ${pct(a.max_error_rate)}, p99 ≤ ${a.max_p99_ms} ms and ≤ ${num(a.max_p99_ratio)}× stable's, at least ${a.min_requests} canary requests.`));
    const checkRecords = st.records.filter(x => x.kind === 'check');
    if (st.records.length !== lastRecords) {
      lastRecords = st.records.length;
      const measured = checkValues(checkRecords);
      fill(checks, checkTimeline(checkRecords, { title: 'Each check over time' }),
        h('p.muted#checks-count', ['pass', 'fail', 'inconclusive'].map(x => `${checkRecords.filter(c => c.result === x).length} ${x}`).join(' · ')),
        measured.length ? lineChart([
          { name: 'canary p99', points: measured.map(m => [m.at, m.canaryP99]) },
          { name: 'stable p99', points: measured.map(m => [m.at, m.stableP99]) },
        ], { title: 'p99 at each check (ms)', unit: 'ms' }) : null);
      fill(records, table([
        { label: 'At', value: x => time(x.at_us) },
        { label: 'Kind', value: x => x.kind },
        { label: 'Result', value: x => x.result ? badge(x.result) : '' },
        { label: 'Message', value: x => x.message },
      ], st.records.slice(-200).reverse(), { id: 'records-table', caption: 'Newest first (the last 200)' }));
    }
    const t = Date.now();
    const role = w => String(w.version) === String(r.canary) ? `canary v${w.version}` : `stable v${w.version}`;
    for (const w of st.windows) {
      series.p99.add(role(w), w.p99_ms, t); series.err.add(role(w), w.error_rate * 100, t); series.rps.add(role(w), w.requests_per_second, t);
    }
    fill(windows, table([
      { label: 'Version', value: w => role(w) },
      { label: 'Requests', value: w => w.requests, num: true },
      { label: 'Requests / s', value: w => num(w.requests_per_second, 3), num: true },
      { label: 'Error rate', value: w => pct(w.error_rate), num: true },
      { label: 'p50 (ms)', value: w => num(w.p50_ms, 3), num: true },
      { label: 'p99 (ms)', value: w => num(w.p99_ms, 3), num: true },
    ], st.windows, { id: 'rollout-windows-table', empty: 'No window yet.' }));
    fill(charts,
      lineChart(series.p99.list(), { title: 'p99 latency (ms)', unit: 'ms', threshold: a.max_p99_ms || undefined }),
      lineChart(series.err.list(), { title: 'Error rate (%)', unit: '%', threshold: a.max_error_rate !== undefined ? a.max_error_rate * 100 : undefined }),
      lineChart(series.rps.list(), { title: 'Requests per second', unit: '/s' }));
    if (r.state !== lastState) {
      lastState = r.state;
      const buttons = [];
      if (can('rollouts:admin') && ACTIVE.includes(r.state)) {
        if (r.state === 'paused') buttons.push(h('button#rollout-resume', { type: 'button', onclick: () => act('resume') }, 'Resume'));
        else buttons.push(h('button.secondary#rollout-pause', { type: 'button', onclick: () => act('pause') }, 'Pause'));
        buttons.push(h('button#rollout-promote', { type: 'button', onclick: () => act('promote', `Version ${r.canary} takes all of ${model}'s traffic and the production alias moves to it.`) }, 'Promote…'));
        buttons.push(h('button.danger#rollout-abort', { type: 'button', onclick: () => act('abort', `All traffic goes back to version ${r.stable}; the canary alias moves back.`) }, 'Abort…'));
      }
      fill(actions, buttons);
    }
  };
  await ctx.every(2000, refresh);
}
