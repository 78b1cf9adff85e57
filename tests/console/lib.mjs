// Shared by the console's browser tests: launching Debian's Chromium through
// playwright-core (never a downloaded browser), signing in, the API as the
// test sees it, DOM waits with generous timeouts (a busy 2-core machine),
// and screenshots when MLSERVE_CONSOLE_SCREENSHOTS_DIR is set.

import { chromium } from 'playwright-core';
import path from 'node:path';
import { readFile } from 'node:fs/promises';

export const BASE = process.env.MLSERVE_URL;           // http://127.0.0.1:<gateway port>
export const WAIT = Number(process.env.MLSERVE_CONSOLE_WAIT_MS || 90000);
const SHOTS = process.env.MLSERVE_CONSOLE_SCREENSHOTS_DIR || '';
// The console's files from this folder instead of those the binary embeds
// (for a console change tried against a binary built before it): each
// /ui/ response keeps the binary's headers (type, CSP) with the file's bytes.
const CONSOLE_DIR = process.env.MLSERVE_CONSOLE_DIR || '';

if (!BASE) throw new Error('MLSERVE_URL is not set');

/** Chromium, headless, from /usr/bin/chromium. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.MLSERVE_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

/** A drift report that does not exist yet is a 404 the page expects. */
const expected = r => r.status() === 404 && r.url().includes('/v1/monitoring/drift/');

/** A page that records every script error and failed request it did not expect (`page.problems`). */
export async function newPage(browser, { allowStatus = [] } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  context.setDefaultTimeout(WAIT);
  if (CONSOLE_DIR) await serveConsoleFrom(context, CONSOLE_DIR);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', e => page.problems.push(`page error: ${e.message}`));
  page.on('response', r => {
    if (r.status() >= 400 && !allowStatus.includes(r.status()) && !expected(r)) page.problems.push(`${r.status()} ${r.request().method()} ${r.url()}`);
  });
  return page;
}

/** Answers the context's /ui/ requests with the files under `dir` (see MLSERVE_CONSOLE_DIR). */
export async function serveConsoleFrom(context, dir) {
  await context.route(`${BASE}/ui/**`, async route => {
    const rel = new URL(route.request().url()).pathname.slice('/ui/'.length) || 'index.html';
    const response = await route.fetch();
    let body;
    try { body = await readFile(path.join(dir, path.normalize(rel))); } catch { return route.fulfill({ response }); }
    await route.fulfill({ response, body });
  });
}

/** Opens the console and signs in with `token` (through the form, by keyboard). */
export async function signIn(page, token) {
  await page.goto(`${BASE}/ui/`);
  await page.locator('#token').waitFor();
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Enter');
  await page.locator('#nav a').first().waitFor();
}

/** Goes to a hash route and waits for the page's heading. */
export async function go(page, route, heading) {
  await page.evaluate(r => { location.hash = r; }, `#/${route}`);
  await page.locator('#page h1', { hasText: heading }).waitFor();
}

/** The API as the test calls it (Node's fetch, a credential of its own). */
export async function api(token, p, { method = 'GET', body } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(BASE + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${p}: HTTP ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Waits until fn() (run in the page) returns a truthy value; returns it. */
export async function until(page, what, fn, arg) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 250 });
    return await handle.jsonValue();
  } catch (e) {
    throw new Error(`timed out waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

/** The texts of the cells of `selector`'s body rows: [[cell, ...], ...]. */
export function rows(page, selector) {
  return page.$$eval(`${selector} tbody tr`, trs => trs.map(tr => [...tr.cells].map(td => td.textContent.trim())));
}

/** A full-page screenshot into the screenshots directory, when set. */
export async function shot(page, name) {
  if (!SHOTS) return;
  await page.evaluate(() => document.activeElement?.blur?.());
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Equality of two sets of strings, or an error naming the difference. */
export function sameSet(what, got, want) {
  const g = new Set(got), w = new Set(want);
  const missing = [...w].filter(x => !g.has(x)), extra = [...g].filter(x => !w.has(x));
  if (missing.length || extra.length) {
    throw new Error(`${what}: missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}`);
  }
}

export function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** The console's number formatting (dom.js num), to compare API values with cells. */
export function num(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return '—';
  const n = Number(v);
  if (Number.isInteger(n)) return String(n);
  return String(Number(n.toPrecision(digits)));
}

/** Runs `main`, prints its result as one JSON line, exits 1 on failure. */
export async function run(main) {
  const browser = await launch();
  try {
    const result = await main(browser);
    console.log(JSON.stringify({ ok: true, ...result }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: e.stack || String(e) }));
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

/** Controls without an accessible name (label, aria-label or text) on the page now. */
export function unlabelled(page) {
  return page.evaluate(() => [...document.querySelectorAll('button, input, select, textarea, a[href], svg a')]
    .filter(el => el.offsetParent !== null || el instanceof SVGElement)
    .filter(el => {
      const labels = el.labels ? [...el.labels].map(l => l.textContent.trim()).join('') : '';
      const text = el instanceof HTMLInputElement || el instanceof HTMLSelectElement ? '' : el.textContent.trim();
      return !(el.getAttribute('aria-label') || labels || text || el.getAttribute('title'));
    })
    .map(el => el.outerHTML.slice(0, 120)));
}

/** Fails when a control of the page has no accessible name. */
export async function labelledControls(page, where) {
  const bad = await unlabelled(page);
  if (bad.length) throw new Error(`controls without a label on ${where}: ${bad.join(' | ')}`);
}
