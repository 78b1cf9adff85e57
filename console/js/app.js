// The console's shell: sign-in, the navigation, hash routing
// (#/<page>/<args...>) and the polling lifecycle of the page shown.

import { api, can, canAny, session, setUnauthorizedHandler, token, ApiError } from './api.js';
import { h, fill } from './dom.js';

/** The pages: hash, nav label, module, and whether the credential may read it. */
/** The pages: hash, nav label, module, the scopes that may read it, the role that serves its data. */
const PAGES = [
  { path: 'overview', label: 'Overview', module: './overview.js', scope: [] },
  { path: 'models', label: 'Models', module: './models.js', scope: ['registry:read'], role: 'registry' },
  { path: 'serving', label: 'Serving', module: './serving.js', scope: ['infer'], role: 'inference' },
  { path: 'rollouts', label: 'Rollouts', module: './rollouts.js', scope: ['registry:read', 'rollouts:admin'], role: 'monitoring' },
  { path: 'training', label: 'Training', module: './training.js', scope: ['training:submit', 'registry:read'], role: 'training' },
  { path: 'features', label: 'Features', module: './features.js', scope: ['features:read'], role: 'features' },
  { path: 'keys', label: 'Keys', module: './keys.js', scope: ['keys:admin'] },
];

const $ = id => document.getElementById(id);
const allowed = p => !p.scope.length || canAny(...p.scope);
/** Whether this gateway reaches the role behind a page (all-in-one: every role; split: those configured). */
const reached = p => !p.role || !session.roles || session.roles.includes(p.role);
let generation = 0;

function showSignIn(message = '') {
  generation++;
  $('nav').hidden = true;
  $('who').hidden = true;
  fill($('page'));
  $('signin').hidden = false;
  $('signin-error').textContent = message;
  $('token').value = '';
  $('token').focus();
}

async function signIn(t) {
  token.set(t);
  try {
    Object.assign(session, await api('/v1/whoami'));
    session.roles = await api('/v1/gateway/roles').then(r => r.roles.map(x => x.role), () => null);
  } catch (e) {
    token.clear();
    showSignIn(e instanceof ApiError && e.status === 401
      ? 'That credential was refused (unknown, revoked or expired).'
      : `Sign-in failed: ${e.message}`);
    return false;
  }
  $('signin').hidden = true;
  $('identity').textContent = session.auth ? session.identity : 'authentication off';
  $('who').hidden = false;
  fill($('nav'), PAGES.filter(p => allowed(p) && reached(p)).map(p => h('a', { href: `#/${p.path}`, 'data-page': p.path }, p.label)));
  $('nav').hidden = false;
  return true;
}

/** The route of the hash: [page, ...args] (decoded). */
function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return parts.length ? parts : ['overview'];
}

async function show(focus) {
  const gen = ++generation;
  const [name, ...args] = route();
  const page = PAGES.find(p => p.path === name);
  const el = $('page');
  for (const a of $('nav').querySelectorAll('a')) {
    if (a.dataset.page === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!page) {
    fill(el, h('h1', 'Not found'), h('p', `No page '${name}'.`), h('a', { href: '#/overview' }, 'Overview'));
    return;
  }
  document.title = `${page.label} · mlserve`;
  if (!reached(page)) {
    fill(el, h('h1', page.label), h('p.error#denied', { role: 'alert' },
      `This gateway reaches no ${page.role} role (see the Overview's roles).`));
    return;
  }
  if (!allowed(page)) {
    fill(el, h('h1', page.label), h('p.error#denied', { role: 'alert' },
      `This credential lacks the scope ${page.scope.map(s => `'${s}'`).join(' or ')} this page needs.`));
    return;
  }
  const alive = () => gen === generation;
  const ctx = {
    el, args, alive,
    /** Runs fn now and then every `ms` until the page changes (never overlapping). */
    every(ms, fn) {
      const tick = async () => {
        if (!alive()) return;
        try { await fn(); } catch (e) { if (alive()) report(e); }
        if (alive()) setTimeout(tick, ms);
      };
      return tick();
    },
  };
  const report = e => {
    let box = el.querySelector('#page-error');
    if (!box) { box = h('p.error#page-error', { role: 'alert' }); el.prepend(box); }
    box.textContent = e.message;
  };
  fill(el, h('p.muted', 'Loading…'));
  try {
    const mod = await import(page.module);
    if (!alive()) return;
    await mod.render(ctx, ...args);
    const h1 = el.querySelector('h1');
    if (alive() && focus && h1) { h1.tabIndex = -1; h1.focus(); }
  } catch (e) {
    if (alive()) { fill(el, h('h1', page.label)); report(e); }
  }
}

setUnauthorizedHandler(message => {
  token.clear();
  showSignIn(`Signed out: ${message}`);
});

$('signin').addEventListener('submit', async ev => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (t && await signIn(t)) show(true);
});
$('signout').addEventListener('click', () => { token.clear(); showSignIn(); });
window.addEventListener('hashchange', () => { if (token.get() && !$('nav').hidden) show(true); });

(async () => {
  if (token.get() && await signIn(token.get())) show(false);
  else if (!token.get()) showSignIn();
})();
