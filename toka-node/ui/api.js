// The console's only way to the node: its public HTTP API, with the operator's token.
//
// The token lives in sessionStorage (this tab only, gone when it closes) and goes out as
// `Authorization: Bearer` on every call. Any 401 means the node no longer accepts it
// (revoked, expired, or the node's key changed): the console signs out.

const KEY = 'toka.console.token';

/** The token of this browser session, or null. */
export function token() {
  return sessionStorage.getItem(KEY);
}

/** Keeps `value` as the session's token. */
export function signIn(value) {
  sessionStorage.setItem(KEY, value);
}

/** Forgets the token. */
export function signOut() {
  sessionStorage.removeItem(KEY);
}

let unauthorized = () => {};

/** Calls `handler(message)` whenever the node answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** A refusal or failure of the API: its HTTP status and the node's `error` text. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  /** Whether the panel asking should just hide: the token may not (403) or the node has no such route (404, 405). */
  get hides() {
    return this.status === 403 || this.status === 404 || this.status === 405;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  const t = token();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

async function failure(res) {
  let message = res.statusText;
  try {
    const body = await res.json();
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    // Not JSON: keep the status text.
  }
  if (res.status === 401) unauthorized(message);
  return new ApiError(res.status, message);
}

/**
 * `method path` with an optional JSON body; resolves to the parsed JSON answer (or the
 * text when `text` is set), rejects with an ApiError.
 */
export async function call(method, path, body, { text = false, signal } = {}) {
  const init = { method, headers: headers(), cache: 'no-store', signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `the node did not answer (${e.message})`);
  }
  if (!res.ok) throw await failure(res);
  return text ? res.text() : res.json();
}

export const get = (path, opts) => call('GET', path, undefined, opts);
export const post = (path, body, opts) => call('POST', path, body, opts);

/**
 * Server-sent events from `path` (GET, or POST with `body`), read with fetch so the
 * bearer token can go in a header (EventSource cannot send one). Calls `onEvent({event,
 * data, id})` for each; resolves when the stream ends, rejects with an ApiError if it
 * could not be opened. Abort with `signal`.
 */
export async function stream(path, onEvent, { signal, body } = {}) {
  const init = {
    method: body === undefined ? 'GET' : 'POST',
    headers: headers({ Accept: 'text/event-stream' }),
    cache: 'no-store',
    signal,
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let frame = { event: 'message', data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, '');
      buffer = buffer.slice(newline + 1);
      if (line === '') {
        if (frame.data.length) onEvent({ event: frame.event, data: frame.data.join('\n'), id: frame.id });
        frame = { event: 'message', data: [], id: null };
      } else if (line.startsWith(':')) {
        // A comment: the keep-alive.
      } else {
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
        if (field === 'event') frame.event = val;
        else if (field === 'data') frame.data.push(val);
        else if (field === 'id') frame.id = val;
      }
    }
  }
}

/** Prometheus text as `{name or name{labels}: number}`. */
export function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    if (space < 0) continue;
    const value = Number(line.slice(space + 1));
    if (!Number.isNaN(value)) values[line.slice(0, space)] = value;
  }
  return values;
}

/**
 * What a journaled payload shows: the API gives UTF-8 text or hex of the record's bytes
 * (postcard). A runtime record embeds the agent's JSON message as bytes, so the longest
 * printable run that parses as JSON is what a person wants to see; else the printable
 * text, else the hex.
 */
export function payloadText(payload) {
  if (!payload) return '';
  const hex = payload.hex || '';
  let text = payload.utf8;
  if (typeof text !== 'string') {
    const bytes = new Uint8Array(hex.length / 2);
    for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
    text = new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  }
  try {
    JSON.parse(text);
    return text;
  } catch {
    // A binary record: look inside.
  }
  const runs = text.match(/[\x20-\x7e\u00a0-\ufffc\t\n]{2,}/g) || [];
  let best = null;
  for (const whole of runs) {
    // Bounded work per payload: long runs are cut, and only a few starts are tried.
    const run = whole.slice(0, 65536);
    let tries = 0;
    for (let start = 0; start < run.length && tries < 8; start++) {
      const c = run[start];
      if (c !== '{' && c !== '[' && c !== '"') continue;
      tries++;
      const candidate = jsonPrefix(run.slice(start));
      if (candidate && (!best || candidate.length > best.length)) best = candidate;
      if (best && best.length >= run.length - start) break;
    }
  }
  if (best) return best;
  // Binary fields decode as stray characters: show only ASCII words.
  const printable = (text.match(/[\x20-\x7e]{3,}/g) || []).filter((r) => /[A-Za-z0-9]{3}/.test(r)).join(' · ');
  if (printable) return printable;
  return hex ? `binary, ${hex.length / 2} bytes: ${hex.slice(0, 48)}${hex.length > 48 ? '…' : ''}` : '';
}

/** The longest prefix of `s` that parses as JSON, tried at each closing bracket or quote. */
function jsonPrefix(s) {
  const closer = s[0] === '{' ? '}' : s[0] === '[' ? ']' : '"';
  let tries = 0;
  for (let end = s.length; end > 1 && tries < 32; end--) {
    if (s[end - 1] !== closer) continue;
    tries++;
    const slice = s.slice(0, end);
    try {
      JSON.parse(slice);
      return slice;
    } catch {
      // Keep shortening.
    }
  }
  return null;
}
