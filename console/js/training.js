// Training: workflows and runs; a run's DAG with its steps' states, a
// step's logs streamed live (following X-Mlserve-Next-Offset until
// X-Mlserve-Log-Complete), artifacts and metrics, retry and cancel.

import { api, can, seg } from './api.js';
import { h, fill, table, badge, time, num, bytes, confirmDialog, errorLine, focusAfter, labelled, select } from './dom.js';
import { barChart } from './chart.js';
import { dag } from './dag.js';

const TERMINAL = ['succeeded', 'failed', 'cancelled'];

export async function render(ctx, what, id, step) {
  if (what === 'runs' && id) return run(ctx, id, step);
  const workflows = h('div#workflows'), runs = h('div#runs'), err = errorLine('training-error');
  fill(ctx.el, h('h1', 'Training'), err,
    h('section', h('h2', 'Workflows'), workflows),
    h('section', h('h2', 'Runs'), runs));
  const list = await api('/v1/training/workflows');
  fill(workflows, table([
    { label: 'Workflow', value: w => h('strong', w.name) },
    { label: 'Version', value: w => w.version, num: true },
    { label: 'Description', value: w => w.description },
    { label: 'Steps', value: w => h('code', w.steps.join('  ')) },
    { label: 'Applied', value: w => time(w.created_at_us) },
    { label: '', value: w => can('training:submit') ? h('button.secondary', { type: 'button', 'aria-label': `Start a run of ${w.name}`, onclick: async () => {
      try {
        const r = await api(`/v1/training/workflows/${seg(w.name)}/runs`, { method: 'POST', body: { parameters: {} } });
        location.hash = `#/training/runs/${seg(r.id)}`;
      } catch (e) { err.textContent = e.message; }
    } }, 'Run') : '' },
  ], list.workflows, { id: 'workflows-table', empty: 'No workflow applied.' }));
  let last = '';
  await ctx.every(3000, async () => {
    const doc = await api('/v1/training/runs?limit=100');
    const text = JSON.stringify(doc);
    if (text === last) return;
    last = text;
    fill(runs, table([
      { label: 'Run', value: r => h('a', { href: `#/training/runs/${seg(r.id)}` }, h('code', r.id)) },
      { label: 'Workflow', value: r => `${r.workflow} v${r.workflow_version}` },
      { label: 'State', value: r => badge(r.state) },
      { label: 'Trigger', value: r => r.trigger },
      { label: 'Created', value: r => time(r.created_at_us) },
      { label: 'Finished', value: r => time(r.finished_at_us) },
      { label: 'Message', value: r => r.message },
    ], doc.runs, { id: 'runs-table', empty: 'No run yet.' }));
  });
}

async function run(ctx, id, selected) {
  const head = h('div#run-head'), graph = h('div#run-dag'), stepInfo = h('div#step-info'), logs = h('div#run-logs');
  const artifacts = h('div#run-artifacts'), metrics = h('div#run-metrics'), actions = h('div.row#run-actions'), err = errorLine('run-error');
  fill(ctx.el,
    h('p', h('a', { href: '#/training' }, '← Training')),
    h('h1', h('span', 'Run '), h('code', id)),
    h('section', head, actions, err),
    h('section', h('h2', 'Steps'), h('p.muted', 'Select a step to follow its logs.'), graph, stepInfo),
    selected ? h('section', h('h2', `Logs of ${selected}`), logs) : null,
    h('div.grid', h('section', h('h2', 'Artifacts'), artifacts), h('section', h('h2', 'Metrics'), metrics)));

  let exitHandler, last = '', lastState = '';
  const act = async (action, confirmText) => {
    err.textContent = '';
    if (confirmText && !await confirmDialog(`${action === 'cancel' ? 'Cancel' : 'Retry'} run ${id}?`, confirmText, action === 'cancel' ? 'Cancel run' : 'Retry')) return;
    try {
      await api(`/v1/training/runs/${seg(id)}/${action}`, { method: 'POST' });
      lastState = '';
      await refresh();
      focusAfter(ctx.el, '#run-actions');
    } catch (e) { err.textContent = e.message; }
  };

  const refresh = async () => {
    const r = await api(`/v1/training/runs/${seg(id)}`);
    if (exitHandler === undefined) {
      try {
        const wf = await api(`/v1/training/workflows/${seg(r.workflow)}?version=${r.workflow_version}`);
        exitHandler = JSON.parse(wf.spec_json || '{}').on_exit?.name || null;
      } catch { exitHandler = null; }
    }
    const text = JSON.stringify(r);
    if (text === last) return;
    last = text;
    fill(head, h('dl.facts',
      h('dt', 'Workflow'), h('dd', `${r.workflow} v${r.workflow_version}`),
      h('dt', 'State'), h('dd#run-state', badge(r.state)),
      h('dt', 'Trigger'), h('dd', r.trigger),
      h('dt', 'Parameters'), h('dd', h('code', Object.entries(r.parameters || {}).sort().map(([k, v]) => `${k}=${v}`).join(' ') || 'none')),
      h('dt', 'Created'), h('dd', time(r.created_at_us)),
      h('dt', 'Finished'), h('dd', time(r.finished_at_us) || '—'),
      r.message ? [h('dt', 'Message'), h('dd', r.message)] : null));
    const focused = document.activeElement?.closest?.('#dag a')?.dataset.step;
    fill(graph, dag(r.steps, { href: x => `#/training/runs/${seg(id)}/${seg(x.name)}`, selected, exitHandler, title: `DAG of run ${id}` }));
    if (focused) graph.querySelector(`a[data-step="${CSS.escape(focused)}"]`)?.focus();
    fill(stepInfo, table([
      { label: 'Step', value: x => h('a', { href: `#/training/runs/${seg(id)}/${seg(x.name)}` }, x.name) },
      { label: 'State', value: x => badge(x.state) },
      { label: 'Attempt', value: x => x.attempt, num: true },
      { label: 'Started', value: x => time(x.started_at_us) },
      { label: 'Finished', value: x => time(x.finished_at_us) },
      { label: 'Exit', value: x => x.exit_code ?? '', num: true },
      { label: 'Outputs', value: x => Object.entries(x.outputs || {}).map(([k, v]) => `${k}=${v}`).join(', ') },
      { label: 'Message', value: x => x.message },
    ], r.steps, { id: 'steps-table' }));
    fill(artifacts, table([
      { label: 'Step', value: a => a.step },
      { label: 'Name', value: a => a.name },
      { label: 'Key', value: a => h('code', a.key) },
      { label: 'Size', value: a => bytes(a.size), num: true },
      { label: 'sha256', value: a => h('code', a.sha256) },
    ], r.artifacts, { id: 'artifacts-table', empty: 'No artifact.' }));
    fill(metrics, table([
      { label: 'Step', value: m => m.step },
      { label: 'Metric', value: m => m.name },
      { label: 'Value', value: m => num(m.value, 6), num: true },
    ], r.metrics, { id: 'metrics-table', empty: 'No metric.' }),
    r.metrics.length ? barChart(r.metrics.map(m => ({ label: `${m.step}.${m.name}`, value: m.value })), { title: 'Metrics' }) : null);
    if (r.state !== lastState) {
      lastState = r.state;
      const buttons = [];
      if (can('training:submit')) {
        if (!TERMINAL.includes(r.state)) buttons.push(h('button.danger#run-cancel', { type: 'button', onclick: () => act('cancel', 'Running steps are stopped (their process trees killed) and the run ends as cancelled.') }, 'Cancel run…'));
        if (r.state === 'failed' || r.state === 'cancelled') buttons.push(h('button#run-retry', { type: 'button', onclick: () => act('retry') }, 'Retry'));
      }
      fill(actions, buttons);
    }
  };
  await refresh();
  if (selected) follow(ctx, id, selected, logs);
  ctx.every(2000, refresh);
}

/** Streams a step's logs: appends each new chunk, polling until complete. */
function follow(ctx, id, step, box) {
  const stream = select([['stdout', 'stdout'], ['stderr', 'stderr']], 'stdout');
  const pre = h('pre.logs#logs', { tabindex: 0, 'aria-label': `Logs of ${step}` });
  const status = h('p.muted#log-status', { 'aria-live': 'off' }, 'Following…');
  fill(box, h('div.row', labelled('log-stream', 'Stream', stream)), pre, status);
  let token = 0;
  const start = () => {
    const mine = ++token;
    let offset = 0;
    pre.textContent = '';
    status.textContent = 'Following…';
    const decoder = new TextDecoder();
    const tick = async () => {
      if (!ctx.alive() || mine !== token) return;
      try {
        const r = await api(`/v1/training/runs/${seg(id)}/steps/${seg(step)}/logs?stream=${stream.value}&offset=${offset}`, { raw: true });
        const chunk = new Uint8Array(await r.arrayBuffer());
        if (!ctx.alive() || mine !== token) return;
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        if (chunk.length) pre.append(decoder.decode(chunk, { stream: true }));
        if (atBottom) pre.scrollTop = pre.scrollHeight;
        offset = Number(r.headers.get('X-Mlserve-Next-Offset') ?? offset + chunk.length);
        if (r.headers.get('X-Mlserve-Log-Complete') === 'true') {
          status.textContent = `Complete (${offset} bytes).`;
          status.dataset.complete = 'true';
          return;
        }
        status.textContent = `Following… (${offset} bytes)`;
      } catch (e) {
        status.textContent = `Not available yet: ${e.message}`;
      }
      setTimeout(tick, 1000);
    };
    tick();
  };
  stream.addEventListener('change', start);
  start();
}
