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
  await until(page, 'serving charts with lines', () => document.querySelectorAll('#serving-charts svg').length === 5 && document.querySelectorAll('#serving-charts path.line').length >= 2);
  const titles = await page.locator('#serving-charts svg').evaluateAll(svgs => svgs.map(s => s.getAttribute('aria-label') || s.textContent));
  check(titles.some(t => t.includes('Queue depth')), `no queue depth chart: ${JSON.stringify(titles).slice(0, 300)}`);
  const stats = (await get(`/v2/models/${MODEL}/stats`)).model_stats;
  const counts = await page.locator('#serving-counts').textContent();
  for (const m of stats) {
    check(counts.includes(`version ${m.version}:`), `no counts of version ${m.version}: ${counts}`);
    check(Number.isInteger(m.instances) && m.instances >= 1 && counts.includes(`${m.instances} instances`), `version ${m.version}: the API says ${m.instances} instances, the page: ${counts}`);
  }
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

/** dom.js time(): microseconds since the epoch as local "YYYY-MM-DD HH:MM:SS". */
function localTime(us) {
  const d = new Date(Number(us) / 1000), pad = n => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** features.js bins(): the labels of the bins around `edges`. */
function binLabels(edges) {
  const e = v => String(+Number(v).toPrecision(3));
  return [`< ${e(edges[0])}`, ...edges.slice(1).map((x, i) => `${e(edges[i])} – ${e(x)}`), `> ${e(edges.at(-1))}`];
}

/** Each view's freshness as the views table shows it: {view: {kind: {us, time, datetime, ago}}, text}. */
function shownFreshness(page) {
  return page.$$eval('#views-table tr[data-view]', trs => Object.fromEntries(trs.map(tr => [tr.dataset.view, {
    materialize: tr.cells[7].textContent.trim(),
    newest: tr.cells[8].textContent.trim(),
    when: Object.fromEntries([...tr.querySelectorAll('.when[data-kind]')].map(w => [w.dataset.kind, {
      us: w.dataset.us, time: w.querySelector('time')?.textContent ?? null,
      datetime: w.querySelector('time')?.getAttribute('datetime') ?? null, ago: w.querySelector('.ago')?.textContent ?? null,
    }])),
  }])));
}

/** One time of the freshness columns against the API's microseconds. */
function sameWhen(what, shown, us, none) {
  check(shown, `${what}: not shown`);
  check(shown.us === String(us), `${what}: shown ${shown.us} µs, the API ${us}`);
  if (!us) return;
  check(shown.time === localTime(us), `${what}: shown ${shown.time}, the API ${localTime(us)}`);
  check(shown.datetime === new Date(us / 1000).toISOString(), `${what}: datetime ${shown.datetime}`);
  check(/^\(\d+ (s|min|h|d) ago\)$/.test(shown.ago ?? ''), `${what}: age ${shown.ago}`);
}

async function features(page) {
  // The drift reports the page reads, by model, version and analysis time.
  const driftSeen = new Map();
  const pending = [];
  const onResponse = r => {
    if (!r.url().includes('/v1/monitoring/drift/') || r.status() !== 200) return;
    pending.push(r.json().then(d => { for (const rep of d.reports) driftSeen.set(`${rep.model} ${rep.version} ${rep.analysed_at_us}`, rep); }, () => {}));
  };
  page.on('response', onResponse);
  await go(page, 'features', 'Features');
  const [{ entities }, { feature_views: views, freshness }] = await Promise.all([get('/v1/features/entities'), get('/v1/features/views')]);
  await page.locator('#entities-table').waitFor();
  sameSet('entities', (await rows(page, '#entities-table')).map(r => `${r[0]} ${r[1]}`), entities.map(e => `${e.name} ${e.join_keys.join(', ')}`));
  sameSet('views', (await rows(page, '#views-table')).map(r => `${r[0]} ${r[2]}`),
    views.map(v => `${v.name} ${v.fields.map(f => `${f.name}: ${f.dtype}`).join(', ')}`));
  // Freshness per view: the last materialize (the event time it reached, when it ran) and the newest event.
  check(Array.isArray(freshness) && freshness.length === views.length && freshness.every((f, i) => f.view === views[i].name),
    `freshness does not follow the views: ${JSON.stringify(freshness)}`);
  check(freshness.some(f => f.materialized_at_us > 0) && freshness.some(f => f.newest_event_us > 0), `no materialized view with events: ${JSON.stringify(freshness)}`);
  const want = Object.fromEntries(freshness.map(f => [f.view, [String(f.materialized_to_us), String(f.materialized_at_us), String(f.newest_event_us)]]));
  await until(page, 'the freshness of every view as the API gives it', w => Object.entries(w).every(([view, [to, at, newest]]) => {
    const tr = [...document.querySelectorAll('#views-table tr[data-view]')].find(x => x.dataset.view === view);
    const us = kind => tr?.querySelector(`.when[data-kind="${kind}"]`)?.dataset.us;
    return tr && us('newest-event') === newest && (at === '0' ? !tr.querySelector('[data-kind="materialized-at"]') : us('materialized-to') === to && us('materialized-at') === at);
  }), want);
  const shownFresh = await shownFreshness(page);
  for (const f of freshness) {
    const row = shownFresh[f.view];
    check(row, `view ${f.view}: no row`);
    sameWhen(`${f.view} newest event`, row.when['newest-event'], f.newest_event_us);
    if (!f.newest_event_us) check(row.newest === 'none', `${f.view}: newest event "${row.newest}" without events`);
    if (f.materialized_at_us) {
      sameWhen(`${f.view} materialized to`, row.when['materialized-to'], f.materialized_to_us);
      sameWhen(`${f.view} materialized at`, row.when['materialized-at'], f.materialized_at_us);
    } else {
      check(row.materialize === 'never', `${f.view}: last materialize "${row.materialize}", never materialized`);
    }
  }
  // Drift per feature, as the monitoring role reports it.
  const { reports } = reached.has('monitoring') ? await get(`/v1/monitoring/drift/${MODEL}`) : { reports: [] };
  check(reports.length > 0 || !reached.has('monitoring'), 'no drift report');
  if (!reached.has('monitoring')) await page.locator('#no-drift').waitFor();
  let drifted = 0;
  for (const rep of reports) {
    const sel = `.drift-report[data-model="${rep.model}"][data-version="${rep.version}"]`;
    // The page reads the reports again every 5 s, so it may still show an
    // older analysis than this script's read (a canary's first one can be
    // empty): wait for one at least as new, then check the page against the
    // response it drew.
    await until(page, `drift of ${rep.model} v${rep.version} analysed at ${rep.analysed_at_us} or later`,
      ([s, at]) => Number(document.querySelector(s)?.dataset.analysed ?? 0) >= at, [sel, rep.analysed_at_us]);
    // Each feature's histogram, against the report the page drew (the
    // analysis it shows, read by the page from the API) and the reference
    // bins against this script's own read (the reference does not move).
    const snapshot = await page.locator(sel).evaluate(el => ({
      analysed: el.dataset.analysed,
      shown: [...el.querySelectorAll('tr[data-feature]')].map(tr => tr.dataset.feature),
      features: Object.fromEntries([...el.querySelectorAll('.histogram-of[data-feature]')].map(d => [d.dataset.feature, {
        caption: d.querySelector('figcaption')?.textContent ?? '',
        label: d.querySelector('svg[role="img"]')?.getAttribute('aria-label') ?? '',
        groups: d.querySelectorAll('svg g.bin').length,
        bars: [...d.querySelectorAll('svg g.bin')].map(g => g.querySelectorAll('rect.bar').length),
        bins: [...d.querySelectorAll('tbody tr')].map(tr => [tr.cells[0].textContent, Number(tr.dataset.reference), Number(tr.dataset.current), tr.cells[1].textContent, tr.cells[3].textContent]),
      }])),
    }));
    await Promise.all(pending);
    const drawn = driftSeen.get(`${rep.model} ${rep.version} ${snapshot.analysed}`);
    check(drawn, `${rep.model} v${rep.version}: the page shows analysis ${snapshot.analysed}, which no drift response it read carried`);
    sameSet(`drift features of ${rep.model} v${rep.version}`, snapshot.shown, drawn.features.map(f => f.feature));
    if (!drawn.features.length) continue;
    check(drawn.reference_from_us === rep.reference_from_us && drawn.reference_to_us === rep.reference_to_us, `${rep.model} v${rep.version}: the reference moved`);
    sameSet(`histograms of ${rep.model} v${rep.version}`, Object.keys(snapshot.features), drawn.features.filter(f => f.bin_edges.length).map(f => f.feature));
    for (const d of drawn.features.filter(x => x.bin_edges.length)) {
      const f = rep.features.find(x => x.feature === d.feature) ?? d;
      const h = snapshot.features[f.feature];
      const what = `histogram of ${f.feature} (${rep.model} v${rep.version})`;
      check(f.reference_counts.length === f.bin_edges.length + 1 && f.current_counts.length === f.bin_edges.length + 1, `${what}: the API's counts do not fit its ${f.bin_edges.length} edges`);
      check(JSON.stringify(d.bin_edges) === JSON.stringify(f.bin_edges) && JSON.stringify(d.reference_counts) === JSON.stringify(f.reference_counts), `${what}: the reference bins differ between two reads`);
      check(h.caption.startsWith(`${f.feature} `) && h.label.startsWith(h.caption), `${what}: caption "${h.caption}", aria-label "${h.label.slice(0, 80)}…"`);
      check(h.groups === f.bin_edges.length + 1 && h.bars.every(n => n === 2), `${what}: ${h.groups} bins of ${JSON.stringify(h.bars)} bars, want ${f.bin_edges.length + 1} of 2`);
      const wantBins = binLabels(f.bin_edges).map((label, i) => [label, d.reference_counts[i], d.current_counts[i], String(d.reference_counts[i]), String(d.current_counts[i])]);
      check(JSON.stringify(h.bins) === JSON.stringify(wantBins), `${what}: bins shown ${JSON.stringify(h.bins)}, the API ${JSON.stringify(wantBins)}`);
      check(d.current_counts.reduce((a, b) => a + b, 0) === drawn.current_rows, `${what}: current counts do not sum to ${drawn.current_rows} rows`);
      if (d.drifted) drifted++;
    }
  }
  check(drifted > 0 || !reached.has('monitoring'), 'no drifted feature with a histogram');
  page.off('response', onResponse);
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
  // The lookups the features role served, from its histogram: the page's
  // count never runs ahead of the API's, and the lookups above are in it.
  const shownLookups = await until(page, 'the lookups served', () => {
    const m = /^(\d+) lookups of (\d+) entities/.exec(document.querySelector('#lookup-served-totals')?.textContent || '');
    return m && Number(m[1]) >= 2 && document.querySelectorAll('#lookup-served svg').length === 2 && document.querySelectorAll('#lookup-served path.line').length >= 1 ? Number(m[1]) : null;
  });
  const served = await get('/v1/features/lookup-stats');
  check(served.lookups >= shownLookups && served.buckets.length > 0 && served.buckets.at(-1).count <= served.lookups, `the page shows ${shownLookups} lookups, the API ${JSON.stringify(served).slice(0, 200)}`);
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
