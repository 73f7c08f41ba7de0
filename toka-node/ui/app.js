// The console's shell: sign-in, the navigation (only what the token may see), the hash
// router, and signing out when the node stops accepting the token.

import * as api from './api.js';
import { pages, probe, h, startSampler } from './pages.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const goto = document.getElementById('goto');
const signOutButton = document.getElementById('sign-out');
const toast = document.getElementById('toast');

/** The page shown now: its name and how to stop it (polls, streams). */
let current = { name: null, stop: () => {} };
/** Pages this token may see (set at sign-in). */
let visible = new Set();
let heartbeat = null;
/** Stops the background sampling of /metrics. */
let stopSampler = () => {};
/** True while a pasted token is being checked: its 401 is an answer, not a sign-out. */
let signingIn = false;

/** A short message at the bottom of the window. */
export function say(text, kind = 'info') {
  toast.textContent = text;
  toast.className = kind;
  toast.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { toast.hidden = true; }, 4000);
}

function stopPage() {
  try {
    current.stop();
  } catch {
    // A page that failed to stop cleanly is gone anyway.
  }
  current = { name: null, stop: () => {} };
}

function showSignIn(message) {
  stopPage();
  clearInterval(heartbeat);
  stopSampler();
  stopSampler = () => {};
  toast.hidden = true;
  nav.hidden = true;
  goto.hidden = true;
  signOutButton.hidden = true;
  document.body.dataset.signedIn = 'false';
  const input = h('textarea', {
    id: 'token',
    rows: 4,
    placeholder: 'Paste a capability token (toka-node token mint …, or DATA_DIR/admin.token)',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-label': 'Token',
  });
  const error = h('p', { class: 'error', id: 'sign-in-error' }, message || '');
  error.hidden = !message;
  const form = h('form', { id: 'sign-in', class: 'card narrow' },
    h('h1', {}, 'Sign in'),
    h('p', { class: 'muted' }, 'The token is kept in this tab only (session storage) and sent to this node as a bearer token.'),
    input,
    error,
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    api.signIn(value);
    error.hidden = true;
    signingIn = true;
    try {
      // 401 is the only answer that means "not a token of this node": 403 is a valid
      // token that may not read the tree.
      await api.get('/events?limit=0').catch((err) => { if (err.status !== 403) throw err; });
    } catch (err) {
      api.signOut();
      error.textContent = err.status === 401 ? `The node refused this token: ${err.message}` : err.message;
      error.hidden = false;
      return;
    } finally {
      signingIn = false;
    }
    await start();
  });
  main.replaceChildren(form);
  input.focus();
}

/** After sign-in: find what the token may see, then route. */
async function start() {
  document.body.dataset.signedIn = 'true';
  visible = await probe();
  for (const link of nav.querySelectorAll('a[data-page]')) {
    link.hidden = !visible.has(link.dataset.page);
  }
  nav.hidden = false;
  goto.hidden = false;
  signOutButton.hidden = false;
  clearInterval(heartbeat);
  stopSampler();
  stopSampler = visible.has('metrics') ? startSampler() : () => {};
  // Streams and idle pages make no calls: check the token every 2 s so a revocation
  // signs the console out wherever it is.
  heartbeat = setInterval(() => {
    api.get('/events?limit=0').catch(() => {});
  }, 2000);
  route();
}

function route() {
  if (!api.token()) {
    showSignIn();
    return;
  }
  const path = location.hash.replace(/^#\/?/, '');
  const [name, ...rest] = path.split('/');
  const arg = rest.map(decodeURIComponent).join('/');
  let page = name;
  if (!pages[page] || (page !== 'agent' && !visible.has(page))) {
    page = [...visible][0];
    if (!page) {
      stopPage();
      main.replaceChildren(h('section', { class: 'card' },
        h('h1', {}, 'Nothing to show'),
        h('p', {}, 'This token may not read the tree, the journal, the tools, the approvals or the metrics. '
          + 'Open an agent it may read with the box above.')));
      return;
    }
    if (location.hash !== `#/${page}`) {
      location.replace(`#/${page}`);
      return;
    }
  }
  stopPage();
  for (const link of nav.querySelectorAll('a[data-page]')) {
    link.classList.toggle('active', link.dataset.page === page);
  }
  const root = h('section', { id: `page-${page}`, class: 'page' });
  main.replaceChildren(root);
  document.body.dataset.page = page;
  current = { name: page, stop: pages[page](root, arg, { say, visible }) || (() => {}) };
}

api.onUnauthorized((message) => {
  if (!api.token() || signingIn) return;
  api.signOut();
  showSignIn(`Signed out: the node no longer accepts this token (${message}).`);
});

signOutButton.addEventListener('click', () => {
  api.signOut();
  showSignIn('Signed out.');
});

goto.addEventListener('submit', (e) => {
  e.preventDefault();
  const id = document.getElementById('goto-id').value.trim();
  if (id) location.hash = `#/agent/${encodeURIComponent(id)}`;
});

window.addEventListener('hashchange', () => {
  if (api.token() && document.body.dataset.signedIn === 'true') route();
});

if (api.token()) start();
else showSignIn();
