// A credential without a scope sees no button for it, and its direct
// request is refused. The reader holds registry:read, features:read and
// infer: no registry:write (alias moves), rollouts:admin (pause, promote,
// abort), training:submit (cancel, retry, run) or keys:admin (the Keys page).
//
// env: MLSERVE_URL, MLSERVE_READER_KEY, MLSERVE_JWT (optional: a JWT to sign in with), MLSERVE_MODEL (a rollout in
// progress), MLSERVE_SLEEPER_RUN (a running run), MLSERVE_ADMIN_KEY (to
// read what the reader may not).

import { api, check, go, newPage, run, sameSet, signIn, until } from './lib.mjs';

const READER = process.env.MLSERVE_READER_KEY;
const ADMIN = process.env.MLSERVE_ADMIN_KEY;
const MODEL = process.env.MLSERVE_MODEL;
const SLEEPER = process.env.MLSERVE_SLEEPER_RUN;

run(async browser => {
  const page = await newPage(browser, { allowStatus: [403] });
  await signIn(page, READER);
  const who = await api(READER, '/v1/whoami');
  sameSet('navigation', await page.locator('#nav a').allTextContents(),
    ['Overview', 'Models', 'Serving', 'Rollouts', 'Training', 'Features']);
  const hidden = {};

  await go(page, `models/${MODEL}`, `Model ${MODEL}`);
  await page.locator('#aliases-table').waitFor();
  hidden.move_alias = await page.locator('#move-alias, #move-alias-button').count() === 0;

  await go(page, `rollouts/${MODEL}`, `Rollout of ${MODEL}`);
  const state = (await api(ADMIN, `/v1/monitoring/rollouts/${MODEL}`)).rollout.state;
  check(['waiting', 'progressing', 'paused'].includes(state), `the rollout is not active (${state})`);
  await until(page, 'the rollout state', () => document.querySelector('#rollout-state')?.textContent);
  hidden.rollout_actions = await page.locator('#rollout-actions button').count() === 0;

  await go(page, `training/runs/${SLEEPER}`, 'Run');
  await until(page, 'the running run', () => document.querySelector('#run-state')?.textContent === 'running');
  hidden.cancel_run = await page.locator('#run-actions button').count() === 0;
  await go(page, 'training', 'Training');
  await page.locator('#workflows-table').waitFor();
  hidden.start_run = await page.locator('#workflows-table button').count() === 0;

  await go(page, 'keys', 'Keys');
  const denied = await page.locator('#denied').textContent();
  hidden.keys = denied.includes("'keys:admin'") && await page.locator('#create-key, #keys-table').count() === 0;

  // The same requests made directly, from the page, with the reader's key.
  const runId = SLEEPER;
  const refused = await page.evaluate(async ({ model, runId }) => {
    const t = sessionStorage.getItem('mlserve.token');
    const call = async (method, path, body) => {
      const r = await fetch(path, { method, headers: { Authorization: `Bearer ${t}`, 'Content-Type': 'application/json' }, body: body && JSON.stringify(body) });
      let error = '';
      try { error = (await r.json()).error || ''; } catch { /* empty */ }
      return { method, path, status: r.status, error };
    };
    return [
      await call('PUT', `/v1/registry/models/${model}/aliases/production`, { version: 1 }),
      await call('POST', `/v1/monitoring/rollouts/${model}/abort`, { reason: 'reader' }),
      await call('POST', `/v1/monitoring/rollouts/${model}/pause`, {}),
      await call('POST', `/v1/training/runs/${runId}/cancel`),
      await call('GET', '/v1/keys'),
      await call('POST', '/v1/keys', { name: 'sneaky', scopes: ['keys:admin'], rate: 0, burst: 0 }),
    ];
  }, { model: MODEL, runId });
  // A JWT signs in as well: its subject and its scope claim decide.
  let jwt = null;
  if (process.env.MLSERVE_JWT) {
    const other = await newPage(browser);
    await signIn(other, process.env.MLSERVE_JWT);
    const whoJwt = await api(process.env.MLSERVE_JWT, '/v1/whoami');
    jwt = { identity: await other.locator('#identity').textContent(), whoami: whoJwt.identity,
      nav: await other.locator('#nav a').allTextContents() };
    check(other.problems.length === 0, `problems: ${other.problems.join('; ')}`);
  }
  return { identity: who.identity, scopes: who.scopes, hidden, refused, jwt };
});
