// Keys (scope keys:admin): every API key, creating one (its secret is shown
// once) and revoking one (after a confirmation).

import { api, seg } from './api.js';
import { h, fill, table, badge, confirmDialog, errorLine } from './dom.js';

const SCOPES = ['infer', 'predict', 'registry:read', 'registry:write', 'features:read', 'features:write',
  'training:submit', 'rollouts:admin', 'keys:admin'];
// Key times: microseconds since the epoch (seconds are accepted too).
const when = t => {
  if (!t) return '';
  const ms = t > 1e14 ? t / 1000 : t > 1e11 ? t : t * 1000;
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').slice(0, 19) + ' UTC';
};

export async function render(ctx) {
  const list = h('div#keys'), secret = h('div#secret-box'), err = errorLine('keys-error');
  const name = h('input#key-name', { required: true, size: 20, autocomplete: 'off' });
  const rate = h('input#key-rate', { type: 'number', min: 0, step: 'any', value: '0', size: 6 });
  const burst = h('input#key-burst', { type: 'number', min: 0, step: 1, value: '0', size: 6 });
  const priority = h('input#key-priority', { type: 'number', min: 0, step: 1, value: '0', size: 4 });
  const scopes = h('fieldset#key-scopes', h('legend', 'Scopes'),
    SCOPES.map(s => h('label', h('input', { type: 'checkbox', name: 'scope', value: s, checked: s === 'infer' || s === 'predict' }), ` ${s} `)),
    h('label', { for: 'key-model-scope' }, 'and infer on one model: '), h('input#key-model-scope', { size: 14, placeholder: 'model name' }));
  const form = h('form#create-key',
    h('div.row', h('label', { for: 'key-name' }, 'Name'), name,
      h('label', { for: 'key-rate' }, 'Rate (requests/s, 0: unlimited)'), rate,
      h('label', { for: 'key-burst' }, 'Burst (0: the rate)'), burst,
      h('label', { for: 'key-priority' }, 'Priority (1: highest, 0: the request\'s own)'), priority),
    scopes, h('button#create-key-button', { type: 'submit' }, 'Create key'), err);
  fill(ctx.el, h('h1', 'API keys'), h('section', h('h2', 'New key'), form, secret), h('section', h('h2', 'Keys'), list));

  const load = async () => {
    const { keys } = await api('/v1/keys');
    fill(list, table([
      { label: 'Id', value: k => h('code', k.id) },
      { label: 'Name', value: k => k.name },
      { label: 'Scopes', value: k => k.scopes.join(', ') },
      { label: 'Rate limit', value: k => k.rate ? `${k.rate}/s, burst ${k.burst}` : 'unlimited' },
      { label: 'Priority', value: k => k.priority ? String(k.priority) : 'the request\'s own' },
      { label: 'Created', value: k => when(k.created_at) },
      { label: 'State', value: k => k.revoked_at ? h('span', badge('revoked'), ` ${when(k.revoked_at)}`) : badge('active') },
      { label: '', value: k => k.revoked_at ? '' : h('button.danger', { type: 'button', 'data-revoke': k.id, 'aria-label': `Revoke key ${k.name} (${k.id})`, onclick: () => revoke(k) }, 'Revoke…') },
    ], keys, { id: 'keys-table', empty: 'No key.', rowAttrs: k => ({ 'data-key': k.id }) }));
  };
  const revoke = async k => {
    err.textContent = '';
    if (!await confirmDialog(`Revoke key ${k.name}?`, `Requests with key ${k.id} are refused from now on. This cannot be undone.`, 'Revoke')) return;
    try {
      await api(`/v1/keys/${seg(k.id)}`, { method: 'DELETE' });
      await load();
    } catch (e) { err.textContent = e.message; }
  };
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    err.textContent = '';
    const chosen = [...scopes.querySelectorAll('input[name=scope]:checked')].map(i => i.value);
    const one = document.getElementById('key-model-scope').value.trim();
    if (one) chosen.push(`infer:${one}`);
    try {
      const made = await api('/v1/keys', { method: 'POST', body: { name: name.value.trim(), scopes: chosen, rate: Number(rate.value) || 0, burst: Number(burst.value) || 0, priority: Number(priority.value) || 0 } });
      const code = h('code#new-secret', made.secret);
      fill(secret, h('div.secret', { role: 'status' },
        h('p', h('strong', `Key ${made.key.name} (${made.key.id}) created.`), ' Copy its secret now: it is shown only once.'),
        h('p', code),
        h('div.row',
          navigator.clipboard ? h('button.secondary', { type: 'button', onclick: () => navigator.clipboard.writeText(made.secret) }, 'Copy secret') : null,
          h('button.secondary#dismiss-secret', { type: 'button', onclick: () => fill(secret) }, 'Done, hide it'))));
      name.value = '';
      await load();
      secret.querySelector('#dismiss-secret').focus();
    } catch (e) { err.textContent = e.message; }
  });
  await load();
}
