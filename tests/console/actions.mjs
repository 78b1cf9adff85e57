// Actions done through the UI, by keyboard where a person would: moving an
// alias (confirmed in the dialog), aborting a rollout, following a running
// step's logs live then cancelling its run, creating a key (its secret shown
// once) and revoking it. pytest checks each effect through the API.
//
// env: MLSERVE_URL, MLSERVE_ADMIN_KEY, MLSERVE_MODEL, MLSERVE_ALIAS_TO
// (the version to move production to), MLSERVE_SLEEPER_RUN.

import { api, check, go, newPage, run, signIn, until } from './lib.mjs';

const KEY = process.env.MLSERVE_ADMIN_KEY;
const MODEL = process.env.MLSERVE_MODEL;
const TO = process.env.MLSERVE_ALIAS_TO;
const SLEEPER = process.env.MLSERVE_SLEEPER_RUN;

/** Confirms the open <dialog> by keyboard: Tab from "Go back" to the action, Enter. */
async function confirmByKeyboard(page, title) {
  await page.locator('dialog#confirm[open]').waitFor();
  check((await page.locator('#confirm-title').textContent()).includes(title), `dialog title: ${await page.locator('#confirm-title').textContent()}`);
  check(await page.evaluate(() => document.activeElement?.id) === 'confirm-cancel', 'the dialog does not start on Go back');
  await page.keyboard.press('Tab');
  check(await page.evaluate(() => document.activeElement?.id) === 'confirm-ok', 'Tab does not reach the action');
  await page.keyboard.press('Enter');
  await page.locator('dialog#confirm[open]').waitFor({ state: 'detached' }).catch(() => {});
  await until(page, 'the dialog to close', () => !document.querySelector('dialog#confirm').open);
}

run(async browser => {
  const page = await newPage(browser);
  await signIn(page, KEY);
  const done = {};

  // Moving an alias: Escape first (nothing moves), then confirmed.
  await go(page, `models/${MODEL}`, `Model ${MODEL}`);
  await page.locator('#move-alias-name').fill('production');
  await page.locator('#move-alias-version').selectOption(String(TO));
  await page.locator('#move-alias-button').focus();
  await page.keyboard.press('Enter');
  await page.locator('dialog#confirm[open]').waitFor();
  await page.keyboard.press('Escape');
  await until(page, 'the dialog to close on Escape', () => !document.querySelector('dialog#confirm').open);
  const still = (await api(KEY, `/v1/registry/models/${MODEL}/aliases/production`)).version;
  check(String(still) !== String(TO), 'Escape moved the alias');
  await page.locator('#move-alias-button').focus();
  await page.keyboard.press('Enter');
  await confirmByKeyboard(page, 'Move alias production');
  await until(page, `production on version ${TO} in the aliases table`, to =>
    [...document.querySelectorAll('#aliases-table tbody tr')].some(tr => tr.cells[0].textContent === 'production' && tr.cells[1].textContent === String(to)), TO);
  done.alias = { from: still, to: Number(TO) };

  // Aborting the rollout.
  await go(page, `rollouts/${MODEL}`, `Rollout of ${MODEL}`);
  await page.locator('#rollout-abort').focus();
  await page.keyboard.press('Enter');
  await confirmByKeyboard(page, 'Abort the rollout');
  await until(page, 'the rollout aborted', () => document.querySelector('#rollout-state')?.textContent === 'aborted');
  check(await page.locator('#rollout-actions button').count() === 0, 'an aborted rollout still offers actions');
  done.rollout = 'aborted';

  // A running step's logs stream live (no reload), then the run is cancelled.
  await go(page, `training/runs/${SLEEPER}`, 'Run');
  const run0 = await api(KEY, `/v1/training/runs/${SLEEPER}`);
  const step = run0.steps.find(s => s.state === 'running');
  check(step, `no running step in ${JSON.stringify(run0.steps)}`);
  await page.locator(`#dag a[data-step="${step.name}"]`).focus();
  await page.keyboard.press('Enter');
  await page.evaluate(() => { window.notReloaded = true; });
  const first = await until(page, 'a first tick in the logs', () => {
    const m = [...(document.querySelector('#logs')?.textContent || '').matchAll(/tick (\d+)/g)];
    return m.length ? Number(m.at(-1)[1]) : 0;
  });
  await until(page, 'two more ticks streamed in', n => Math.max(0, ...[...(document.querySelector('#logs')?.textContent || '').matchAll(/tick (\d+)/g)].map(m => Number(m[1]))) >= n + 2, first);
  check(await page.evaluate(() => window.notReloaded === true), 'the page reloaded');
  const streamed = (await page.locator('#logs').textContent()).split('\n').filter(Boolean).length;
  await page.locator('#run-cancel').focus();
  await page.keyboard.press('Enter');
  await confirmByKeyboard(page, `Cancel run ${SLEEPER}`);
  await until(page, 'the run cancelled', () => document.querySelector('#run-state')?.textContent === 'cancelled');
  await until(page, 'the logs complete', () => document.querySelector('#log-status')?.dataset.complete === 'true');
  done.run = { cancelled: SLEEPER, step: step.name, first_tick: first, lines_streamed: streamed };

  // A key: created (the secret shown once), then revoked.
  await go(page, 'keys', 'API keys');
  await page.locator('#key-name').fill('made-in-the-console');
  for (const s of ['predict']) await page.locator(`#key-scopes input[value="${s}"]`).uncheck();
  await page.locator('#key-scopes input[value="registry:read"]').check();
  await page.locator('#create-key-button').focus();
  await page.keyboard.press('Enter');
  const secret = (await page.locator('#new-secret').textContent()).trim();
  const made = (await api(KEY, '/v1/keys')).keys.find(k => k.name === 'made-in-the-console');
  check(made && !made.revoked_at, 'the new key is not listed');
  const whoNew = await api(secret, '/v1/whoami');
  await page.locator('#dismiss-secret').press('Enter');
  await until(page, 'the secret hidden', () => !document.querySelector('#new-secret'));
  await page.locator(`button[data-revoke="${made.id}"]`).focus();
  await page.keyboard.press('Enter');
  await confirmByKeyboard(page, 'Revoke key made-in-the-console');
  await until(page, 'the key shown revoked', id => document.querySelector(`tr[data-key="${id}"]`)?.textContent.includes('revoked'), made.id);
  done.key = { id: made.id, secret, scopes_when_made: whoNew.scopes };

  check(page.problems.length === 0, `problems: ${page.problems.join('; ')}`);
  return done;
});
