// The APIs the console reads, with the signed-in credential. Every call goes
// to this origin (the gateway that served the page).

const KEY = 'mlserve.token';

export const token = {
  get: () => sessionStorage.getItem(KEY) || '',
  set: t => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

/** An API error: its HTTP status and the server's `error` message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let onUnauthorized = () => {};
/** Called when a request answers 401 (the credential is gone or revoked). */
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

/**
 * Sends a request; JSON bodies are encoded. Resolves to the parsed JSON
 * (or the Response itself with `raw`), rejects with an ApiError.
 */
export async function api(path, { method = 'GET', body, raw = false, signal } = {}) {
  const headers = { Authorization: `Bearer ${token.get()}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    let message = `HTTP ${r.status}`;
    try { message = (await r.json()).error || message; } catch { /* not JSON */ }
    if (r.status === 401) onUnauthorized(message);
    throw new ApiError(r.status, message);
  }
  if (raw) return r;
  if (r.status === 204) return null;
  return r.json();
}

/** Path segment encoding. */
export const seg = s => encodeURIComponent(String(s));

/** The caller's identity and scopes, kept once signed in. */
export const session = { identity: '', scopes: [], auth: true, roles: null };

/** Whether the signed-in credential holds `scope` (`infer` also as `infer:<m>`). */
export function can(scope) {
  const s = session.scopes;
  if (scope === 'infer') return s.includes('infer') || s.some(x => x.startsWith('infer:'));
  if (scope.startsWith('infer:')) return s.includes('infer') || s.includes(scope);
  return s.includes(scope);
}

/** Whether any of the scopes is held. */
export const canAny = (...scopes) => scopes.some(can);
