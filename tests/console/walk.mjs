// Every page renders the data the API returns: for each page the script
// reads the same API with the admin key and compares it with the DOM.
// Action buttons the admin key allows are present. Screenshots of every page.
//
// env: MLSERVE_URL, MLSERVE_ADMIN_KEY, MLSERVE_MODEL (followed from the
// registry, with a rollout in progress), MLSERVE_DEMO_RUN (a finished run),
// MLSERVE_SLEEPER_RUN (a running run), MLSERVE_LOOKUP_KEY (an entity key
// with online values).

import { api, check, go, labelledControls, newPage, num, rows, run, sameSet, shot as screenshot, signIn, until } from './lib.mjs';

const KEY = process.env.MLSERVE_ADMIN_KEY;
const MODEL = process.env.MLSERVE_MODEL;
const DEMO = process.env.MLSERVE_DEMO_RUN;
const SLEEPER = process.env.MLSERVE_SLEEPER_RUN;
const LOOKUP = process.env.MLSERVE_LOOKUP_KEY;
const get = p => api(KEY, p);
const seen = [];
let reached = new Set();

const SHOOTING = Boolean(process.env.MLSERVE_CONSOLE_SCREENSHOTS_DIR);

/** For the screenshots only: lets a page's live charts gather a few readings. */
async function settle(page, selector, points = 6) {
  if (!SHOOTING) return;
  await until(page, `${points} readings in ${selector}`, ([sel, n]) => {
    const line = document.querySelector(`${sel} path.line`);
    return line && line.getAttribute('d').split('L').length >= n;
  }, [selector, points]);
}

/** Every control of the page has a label; then the screenshot. */
async function shot(page, name) {
  await labelledControls(page, name);
  await screenshot(page, name);
}

async function overview(page) {
  await go(page, 'overview', 'Overview');
  const { roles } = await get('/v1/gateway/roles');
  await page.locator('#roles-table').waitFor();
  const shown = await rows(page, '#roles-table');
  sameSet('roles', shown.map(r => `${r[0]} ${r[2]}`), roles.map(r => `${r.role} ${r.up ? 'up' : 'down'}`));
  const index = await api(KEY, '/v2/repository/index', { method: 'POST', body: {} });
  await page.locator('#served-table').waitFor();
  sameSet('models served', (await rows(page, '#served-table')).map(r => `${r[0]} ${r[1]} ${r[2]}`),
    index.map(m => `${m.name} ${m.version ?? ''} ${m.state}`));
  // Live numbers: traffic flows, so the tiles and charts fill in.
  await until(page, 'a request rate on the overview', () => /\d/.test(document.querySelector('#overview-rps')?.textContent || '') && document.querySelector('#overview-rps').textContent !== '0');
  await until(page, 'a p99 on the overview', () => /\d/.test(document.querySelector('#overview-p99')?.textContent || ''));
  await until(page, 'lines in the overview charts', () => document.querySelectorAll('#overview-charts path.line').length >= 3);
  if (reached.has('monitoring')) {
    const windows = (await get('/v1/monitoring/windows')).windows;
    check(windows.some(w => w.model === MODEL), `no window of ${MODEL}: ${JSON.stringify(windows)}`);
    await until(page, `${MODEL} in the windows table`, m => [...document.querySelectorAll('#windows-table tbody tr')].some(tr => tr.cells[0].textContent === m), MODEL);
  }
  await settle(page, '#overview-charts');
  await shot(page, 'overview');
  seen.push('overview');
}

async function models(page) {
  await go(page, 'models', 'Models');
  const { models: list } = await get('/v1/registry/models?limit=500');
  await page.locator('#models-table').waitFor();
  const shown = await rows(page, '#models-table');
  sameSet('models', shown.map(r => `${r[0]} ${r[2]}`), list.map(m => `${m.name} ${m.latest_version}`));
  await shot(page, 'models');
  await page.locator('#models-table a', { hasText: MODEL }).click();
  await page.locator('#page h1', { hasText: `Model ${MODEL}` }).waitFor();
  const base = `/v1/registry/models/${MODEL}`;
  const [{ versions }, { aliases }, { moves }] = await Promise.all([get(`${base}/versions?limit=500`), get(`${base}/aliases`), get(`${base}/alias-history?limit=500`)]);
  sameSet('versions', (await rows(page, '#versions-table')).map(r => `${r[0]} ${r[1]} ${r[3]}`),
    versions.map(v => `${v.version} ${v.status} ${Object.entries(v.metrics).sort().map(([k, x]) => `${k}=${num(x)}`).join(', ')}`));
  sameSet('aliases', (await rows(page, '#aliases-table')).map(r => `${r[0]} ${r[1]}`), aliases.map(a => `${a.alias} ${a.version}`));
  sameSet('alias history', (await rows(page, '#history-table')).map(r => `${r[1]} ${r[2]} ${r[3]} ${r[4]}`),
    moves.map(m => `${m.alias} ${m.from_version ?? '—'} ${m.to_version ?? 'deleted'} ${m.actor}`));
  for (const v of versions) {
    const details = page.locator(`details#version-${v.version}`);
    await details.locator('summary').click();
    const files = await details.locator('tr.file').evaluateAll(trs => trs.map(tr => [...tr.cells].map(c => c.textContent.trim())));
    sameSet(`files of version ${v.version}`, files.map(f => `${f[0]} ${f[2]}`), v.files.map(f => `${f.path} ${f.sha256}`));
    const lineage = await details.locator('tr.lineage td').allTextContents();
    const l = v.lineage;
    sameSet(`lineage of version ${v.version}`, lineage, [l.training_run || '—', l.dataset_snapshot || '—', l.code_version || '—']);
  }
  // Two versions side by side: the oldest against the newest.
  const [newest, oldest] = [versions[0], versions.at(-1)];
  await page.locator('#compare-a').selectOption(String(oldest.version));
  await page.locator('#compare-b').selectOption(String(newest.version));
  await until(page, 'the comparison table', v => document.querySelector('#compare-table th:nth-child(2)')?.textContent === `Version ${v}`, oldest.version);
  const compared = await rows(page, '#compare-table');
  const names = [...new Set([...Object.keys(oldest.metrics), ...Object.keys(newest.metrics)])].sort();
  sameSet('compared metrics', compared.map(r => `${r[0]} ${r[1]} ${r[2]}`),
    names.map(k => `${k} ${num(oldest.metrics[k], 6)} ${num(newest.metrics[k], 6)}`));
  check(await page.locator('#move-alias-button').count() === 1, 'the admin sees no Move alias button');
  await page.evaluate(() => window.scrollTo(0, 0));
  await shot(page, 'model');
  seen.push('models');
}

async function serving(page) {
  await go(page, 'serving', 'Serving');
  const index = await api(KEY, '/v2/repository/index', { method: 'POST', body: {} });
  sameSet('serving models', (await rows(page, '#serving-models')).map(r => r[0]), [...new Set(index.map(m => m.name))]);
  await page.locator('#serving-models a', { hasText: MODEL }).click();
  await page.locator('#page h1', { hasText: `Serving ${MODEL}` }).waitFor();
  sameSet('versions served', (await rows(page, '#serving-versions')).map(r => `${r[0]} ${r[1]}`),
    index.filter(m => m.name === MODEL).map(m => `${m.version ?? '—'} ${m.state}`));
  const config = await get(`/v2/models/${MODEL}/config`);
  const groups = config.instance_group || [];
  const shown = await rows(page, '#serving-instances');
  if (groups.length) sameSet('instances', shown.map(r => `${r[1]} ${r[2]}`), groups.map(g => `${g.count} ${g.kind}`));
  // Two readings make the first points; traffic flows, so the lines appear.
  await until(page, 'serving charts with lines', () => document.querySelectorAll('#serving-charts svg').length === 4 && document.querySelectorAll('#serving-charts path.line').length >= 2);
  const stats = (await get(`/v2/models/${MODEL}/stats`)).model_stats;
  const counts = await page.locator('#serving-counts').textContent();
  for (const m of stats) check(counts.includes(`version ${m.version}:`), `no counts of version ${m.version}: ${counts}`);
  await until(page, 'the batch size chart', () => document.querySelectorAll('#batch-sizes rect.bar').length >= 1);
  await settle(page, '#serving-charts');
  await shot(page, 'serving');
  seen.push('serving');
}

async function rollouts(page) {
  await go(page, 'rollouts', 'Rollouts');
  const { rollouts: list } = await get('/v1/monitoring/rollouts?limit=100');
  await page.locator('#rollouts-table').waitFor();
  sameSet('rollouts', (await rows(page, '#rollouts-table')).map(r => `${r[0]} ${r[3]}`), list.map(r => `${r.id} ${r.state}`));
  await shot(page, 'rollouts');
  await go(page, `rollouts/${MODEL}`, `Rollout of ${MODEL}`);
  const before = await get(`/v1/monitoring/rollouts/${MODEL}`);
  const r = before.rollout;
  await page.locator('#rollout-state').waitFor();
  check((await page.locator('#rollout-state').textContent()) === r.state, `state: ${await page.locator('#rollout-state').textContent()} != ${r.state}`);
  check((await page.locator('#rollout-step').textContent()) === `${Math.min(r.step + 1, r.steps.length)} of ${r.steps.length}`, 'step');
  check((await page.locator('#rollout-weights').textContent()) === `stable v${r.stable} ${100 - r.weight}% · canary v${r.canary} ${r.weight}%`,
    `weights: ${await page.locator('#rollout-weights').textContent()}`);
  sameSet('rollout steps', (await rows(page, '#steps-table')).map(x => `${x[1]} ${x[2]}`), r.steps.map(s => `${s.weight}% ${num(s.duration_ms / 1000)} s`));
  // Checks over time: the count shown lies between two readings of the API.
  const nChecks = s => s.records.filter(x => x.kind === 'check').length;
  await until(page, 'the checks on the timeline', n => document.querySelectorAll('#rollout-checks circle').length >= Math.max(1, n), nChecks(before));
  const shownChecks = await page.locator('#rollout-checks circle').count();
  const after = await get(`/v1/monitoring/rollouts/${MODEL}`);
  check(shownChecks >= nChecks(before) && shownChecks <= nChecks(after), `checks shown ${shownChecks}, API ${nChecks(before)}..${nChecks(after)}`);
  // The measurements of each check (read from its message), canary and stable p99.
  if (after.records.some(x => x.kind === 'check' && /^\d+ requests, error rate [\d.]+%, p99/.test(x.message))) {
    await until(page, 'the p99 at each check', () => document.querySelectorAll('#rollout-checks path.line').length === 2);
  }
  await until(page, 'stable and canary windows', () => document.querySelectorAll('#rollout-windows-table tbody tr').length >= 1 && document.querySelectorAll('#rollout-charts path.line').length >= 1);
  for (const id of ['#rollout-pause', '#rollout-promote', '#rollout-abort']) check(await page.locator(id).count() === 1, `the admin sees no ${id}`);
  await settle(page, '#rollout-charts');
  await shot(page, 'rollout');
  seen.push('rollouts');
}

async function training(page) {
  await go(page, 'training', 'Training');
  const { workflows } = await get('/v1/training/workflows');
  await page.locator('#workflows-table').waitFor();
  sameSet('workflows', (await rows(page, '#workflows-table')).map(r => `${r[0]} ${r[1]}`), workflows.map(w => `${w.name} ${w.version}`));
  const { runs } = await get('/v1/training/runs?limit=100');
  await page.locator('#runs-table').waitFor();
  sameSet('runs', (await rows(page, '#runs-table')).map(r => r[0]), runs.map(r => r.id));
  await shot(page, 'training');
  await page.locator('#runs-table a', { hasText: DEMO }).click();
  await page.locator('#dag').waitFor();
  const demo = await get(`/v1/training/runs/${DEMO}`);
  const nodes = await page.locator('#dag a.node').evaluateAll(as => as.map(a => `${a.dataset.step} ${a.dataset.state}`));
  sameSet('DAG nodes', nodes, demo.steps.map(s => `${s.name} ${s.state}`));
  const edges = await page.locator('#dag path.edge').count();
  const want = demo.steps.reduce((n, s) => n + s.dependencies.reduce((m, d) => m + demo.steps.filter(u => u.template === d).length, 0), 0);
  check(edges === want && want > 0, `DAG edges ${edges} != ${want}`);
  sameSet('artifacts', (await rows(page, '#artifacts-table')).map(r => `${r[0]} ${r[1]} ${r[4]}`), demo.artifacts.map(a => `${a.step} ${a.name} ${a.sha256}`));
  sameSet('metrics', (await rows(page, '#metrics-table')).map(r => `${r[0]} ${r[1]} ${r[2]}`), demo.metrics.map(m => `${m.step} ${m.name} ${num(m.value, 6)}`));
  check(await page.locator('#run-retry, #run-cancel').count() === 0, 'a finished, succeeded run offers retry or cancel');
  // A step's logs, complete: equal to the API's.
  const step = demo.steps.find(s => s.state === 'succeeded' && s.dependencies.length);
  await page.locator(`#dag a[data-step="${step.name}"]`).focus();
  await page.keyboard.press('Enter');
  await until(page, 'complete logs', () => document.querySelector('#log-status')?.dataset.complete === 'true');
  const logsApi = await fetch(`${process.env.MLSERVE_URL}/v1/training/runs/${DEMO}/steps/${encodeURIComponent(step.name)}/logs`, { headers: { Authorization: `Bearer ${KEY}` } }).then(r => r.text());
  check((await page.locator('#logs').textContent()) === logsApi, 'the logs shown differ from the API');
  check(logsApi.length > 0, `step ${step.name} logged nothing`);
  await shot(page, 'training-run');
  await go(page, `training/runs/${SLEEPER}`, 'Run');
  await until(page, 'a running run', () => document.querySelector('#run-state')?.textContent === 'running');
  check(await page.locator('#run-cancel').count() === 1, 'the admin sees no Cancel button on a running run');
  seen.push('training');
}

async function features(page) {
  await go(page, 'features', 'Features');
  const [{ entities }, { feature_views: views }] = await Promise.all([get('/v1/features/entities'), get('/v1/features/views')]);
  await page.locator('#entities-table').waitFor();
  sameSet('entities', (await rows(page, '#entities-table')).map(r => `${r[0]} ${r[1]}`), entities.map(e => `${e.name} ${e.join_keys.join(', ')}`));
  sameSet('views', (await rows(page, '#views-table')).map(r => `${r[0]} ${r[2]}`),
    views.map(v => `${v.name} ${v.fields.map(f => `${f.name}: ${f.dtype}`).join(', ')}`));
  // Drift per feature, as the monitoring role reports it.
  const { reports } = reached.has('monitoring') ? await get(`/v1/monitoring/drift/${MODEL}`) : { reports: [] };
  check(reports.length > 0 || !reached.has('monitoring'), 'no drift report');
  if (!reached.has('monitoring')) await page.locator('#no-drift').waitFor();
  for (const rep of reports) {
    const sel = `.drift-report[data-model="${rep.model}"][data-version="${rep.version}"]`;
    await page.locator(sel).waitFor();
    const shown = await page.locator(`${sel} tr[data-feature]`).evaluateAll(trs => trs.map(tr => tr.dataset.feature));
    sameSet(`drift features of ${rep.model} v${rep.version}`, shown, rep.features.map(f => f.feature));
  }
  // An online lookup: the values and their event times, as the API answers.
  const view = views.find(v => v.online);
  const joinKey = entities.find(e => e.name === view.entities[0]).join_keys[0];
  await page.locator('#lookup-view').selectOption(view.name);
  await page.locator(`#lookup-key-${joinKey}`).fill(String(LOOKUP));
  await page.locator(`#lookup-key-${joinKey}`).press('Enter');
  await page.locator('#lookup-table').waitFor();
  const features = view.fields.map(f => `${view.name}:${f.name}`);
  const online = await api(KEY, '/v1/features/online', { method: 'POST', body: { features, entities: [{ keys: { [joinKey]: Number(LOOKUP) } }] } });
  sameSet('online values', (await rows(page, '#lookup-table')).map(r => `${r[0]} ${r[1]} ${r[2]}`),
    online.features.map((f, i) => { const v = online.rows[0].values[i]; return `${f} ${v.value === null ? '—' : JSON.stringify(v.value)} ${v.status}`; }));
  await until(page, 'the lookup latency chart', () => document.querySelectorAll('#lookup-latency svg').length === 1);
  await shot(page, 'features');
  seen.push('features');
}

async function keys(page) {
  await go(page, 'keys', 'API keys');
  const { keys: list } = await get('/v1/keys');
  await page.locator('#keys-table').waitFor();
  sameSet('keys', (await rows(page, '#keys-table')).map(r => `${r[0]} ${r[1]} ${r[2]}`), list.map(k => `${k.id} ${k.name} ${k.scopes.join(', ')}`));
  check(await page.locator('#create-key-button').count() === 1, 'no create button');
  await shot(page, 'keys');
  seen.push('keys');
}

run(async browser => {
  const page = await newPage(browser);
  await page.goto(`${process.env.MLSERVE_URL}/ui/`);
  await page.locator('#token').waitFor();
  await shot(page, 'sign-in');
  await signIn(page, KEY);
  const who = await get('/v1/whoami');
  check((await page.locator('#identity').textContent()) === who.identity, 'identity shown');
  // The pages this gateway reaches (all-in-one: every role; split: those configured).
  reached = new Set((await get('/v1/gateway/roles')).roles.map(r => r.role));
  const pages = [[overview, 'Overview'], [models, 'Models', 'registry'], [serving, 'Serving', 'inference'],
    [rollouts, 'Rollouts', 'monitoring'], [training, 'Training', 'training'], [features, 'Features', 'features'], [keys, 'Keys']]
    .filter(([, , role]) => !role || reached.has(role));
  sameSet('navigation', await page.locator('#nav a').allTextContents(), pages.map(([, label]) => label));
  const only = (process.env.MLSERVE_CONSOLE_PAGES || '').split(',').filter(Boolean);
  for (const [p] of pages) {
    if (!only.length || only.includes(p.name)) await p(page);
  }
  // Accessibility basics on every control the pages drew: a name for each.
  check(page.problems.length === 0, `problems: ${page.problems.join('; ')}`);
  return { pages: seen };
});
