// The console's pages. Each is `(root, arg, ctx) => stop`: it fills `root`, polls or
// streams what it shows, and returns a function that stops all of that. A panel whose
// route the token may not use (403), or the node does not have (404), is hidden.

import * as api from './api.js';
import { lineChart, short } from './charts.js';

/** An element: `h('p', {class: 'x'}, 'text', child, ...)`. Attributes are set as attributes; `on*` functions as listeners. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** Runs `fn` now and every `ms` until stopped; one run at a time. */
function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } catch {
      // A failed poll shows in its panel; keep polling.
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/** A titled panel; `hide()` removes it from view (a route the token may not use). */
function panel(id, title, ...body) {
  const section = h('section', { class: 'card', id }, h('h2', {}, title), ...body);
  return section;
}

/** Handles a panel's failure: hide it on 403/404, else show the error inside it. */
function failed(section, error, slot) {
  if (error instanceof api.ApiError && error.hides) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  (slot || section).replaceChildren(h('p', { class: 'error' }, error.message || String(error)));
}

function time(micros) {
  const d = new Date(Number(micros) / 1000);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour12: false }) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function status(s) {
  return h('span', { class: `status ${s}` }, s);
}

// ---------------------------------------------------------------- the journal, read

/** The journal's last position: from /metrics if the token may read it, else by search. */
async function journalHead() {
  try {
    const m = api.parseMetrics(await api.get('/metrics', { text: true }));
    if (Number.isFinite(m.toka_journal_head_position)) return m.toka_journal_head_position;
  } catch (e) {
    if (!(e instanceof api.ApiError) || !e.hides) throw e;
  }
  const exists = async (p) => (await api.get(`/events?from=${p}&limit=1`)).length > 0;
  if (!(await exists(1))) return 0;
  let lo = 1;
  let hi = 2;
  while (await exists(hi)) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await exists(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** The last `n` (≤ 5,000) journal records, oldest first. */
async function tail(n) {
  const head = await journalHead();
  const out = [];
  let from = Math.max(1, head - n + 1);
  while (from <= head) {
    const limit = Math.min(1000, head - from + 1);
    const page = await api.get(`/events?from=${from}&limit=${limit}`);
    if (!page.length) break;
    out.push(...page);
    from = page[page.length - 1].position + 1;
  }
  return out;
}

const base = (kind) => String(kind).split('@')[0];

/** What an event's payload says: the node's decoding when it gives one (approvals), else the payload's text. */
function shown(e) {
  if (e.approval !== undefined) return JSON.stringify(e.approval);
  return api.payloadText(e.payload);
}

// ---------------------------------------------------------------- what the token may see

/** The pages this token may see: each page's own route answers something but 403/404. */
export async function probe() {
  const checks = {
    tree: () => api.get('/agents'),
    journal: () => api.get('/events?limit=0'),
    approvals: () => api.get('/approvals?status=pending'),
    audit: () => api.get('/audit/denials?limit=1'),
    tools: () => api.get('/tools'),
    metrics: () => api.get('/metrics', { text: true }),
  };
  const seen = new Set();
  await Promise.all(Object.entries(checks).map(async ([page, check]) => {
    try {
      await check();
      seen.add(page);
    } catch {
      // Hidden.
    }
  }));
  return new Set(Object.keys(checks).filter((p) => seen.has(p)));
}

// ---------------------------------------------------------------- tree

function treePage(root, _arg, ctx) {
  const list = h('div', { id: 'tree', class: 'tree' }, h('p', { class: 'muted' }, 'Loading…'));
  const summary = h('p', { id: 'tree-summary', class: 'muted' });
  const spawnId = h('input', { name: 'id', placeholder: 'id', required: true, autocomplete: 'off' });
  const spawnKind = h('input', { name: 'kind', placeholder: 'kind (counter, supervisor, …)', required: true });
  const spawnParent = h('input', { name: 'parent', placeholder: 'parent (optional)' });
  const spawnArgs = h('textarea', { name: 'args', rows: 2, placeholder: 'args as JSON, e.g. {}' });
  const spawn = h('form', { id: 'spawn', class: 'inline' }, spawnId, spawnKind, spawnParent, spawnArgs, h('button', { type: 'submit' }, 'Spawn'));
  spawn.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const body = { id: spawnId.value.trim(), kind: spawnKind.value.trim() };
      if (spawnParent.value.trim()) body.parent = spawnParent.value.trim();
      if (spawnArgs.value.trim()) body.args = JSON.parse(spawnArgs.value);
      await api.post('/agents', body);
      ctx.say(`Spawned ${body.id}`);
      spawnId.value = '';
      refresh();
    } catch (err) {
      ctx.say(err.message, 'error');
    }
  });
  const section = panel('tree-panel', 'Supervision tree', summary, list);
  root.append(section, h('details', { class: 'card' }, h('summary', {}, 'Spawn an agent'), spawn));
  let known = null;

  async function refresh() {
    let agents;
    try {
      agents = await api.get('/agents');
    } catch (e) {
      failed(section, e, list);
      return;
    }
    const children = new Map();
    const ids = new Set(agents.map((a) => a.id));
    for (const a of agents) {
      const parent = a.parent && ids.has(a.parent) ? a.parent : '';
      if (!children.has(parent)) children.set(parent, []);
      children.get(parent).push(a);
    }
    const render = (parent) => {
      const kids = children.get(parent) || [];
      if (!kids.length) return null;
      return h('ul', {}, kids.map((a) => h('li', { 'data-agent': a.id, 'data-status': a.status, class: known && !known.has(a.id) ? 'new' : '' },
        h('a', { href: `#/agent/${encodeURIComponent(a.id)}` }, a.id),
        h('span', { class: 'kind' }, a.kind),
        status(a.status),
        a.restarts === undefined ? null : h('span', { class: 'restarts', title: 'restarts since the node started' }, `↻ ${a.restarts}`),
        a.durable === false ? h('span', { class: 'tag' }, 'not durable') : null,
        a.halted ? h('span', { class: 'error small' }, a.halted) : null,
        render(a.id))));
    };
    const running = agents.filter((a) => a.status === 'running').length;
    const restarts = agents.reduce((n, a) => n + (a.restarts || 0), 0);
    summary.textContent = `${agents.length} agents, ${running} running, ${restarts} restarts since the node started`;
    list.replaceChildren(render('') || h('p', { class: 'muted' }, 'No agents yet.'));
    known = ids;
  }
  return every(1000, refresh);
}

// ---------------------------------------------------------------- one agent

function transcriptView(entries) {
  if (!Array.isArray(entries) || !entries.length) return h('p', { class: 'muted' }, 'No conversation yet.');
  return h('ol', { class: 'transcript' }, entries.map((e) => h('li', { class: `role-${e.role}` },
    h('span', { class: 'role' }, e.role),
    e.content ? h('div', { class: 'content' }, e.content) : null,
    (e.tool_calls || []).map((c) => h('div', { class: 'tool-call' },
      h('span', { class: 'tag' }, 'calls'), h('code', {}, c.name), ' ',
      h('code', { class: 'args' }, typeof c.arguments === 'string' ? c.arguments : JSON.stringify(c.arguments ?? c.input ?? {})),
      c.id ? h('span', { class: 'muted small' }, ` ${c.id}`) : null)),
    e.tool_call_id ? h('div', { class: 'muted small' }, `answers ${e.tool_call_id}`) : null)));
}

function agentPage(root, id, ctx) {
  const info = h('div', { id: 'agent-info' });
  const infoPanel = panel('agent-panel', `Agent ${id}`, info);
  const state = h('div', { id: 'agent-state-body' });
  const queryInput = h('input', { id: 'query-input', value: '"get"', spellcheck: 'false', 'aria-label': 'Query (JSON)' });
  const queryForm = h('form', { class: 'inline' }, queryInput, h('button', { type: 'submit' }, 'Query'));
  const statePanel = panel('agent-state', 'State (query: read-only, nothing journaled)', queryForm, state);
  const message = h('textarea', { id: 'message', rows: 3, spellcheck: 'false', 'aria-label': 'Message (JSON)' });
  const sendResult = h('pre', { id: 'send-result', class: 'result' });
  sendResult.hidden = true;
  const sendForm = h('form', { id: 'send' }, message,
    h('div', { class: 'buttons' },
      h('button', { type: 'submit', id: 'send-button', value: 'send' }, 'Send'),
      h('button', { type: 'button', id: 'ask-button' }, 'Ask (wait for the reply)')),
    sendResult);
  const sendPanel = panel('agent-send', 'Send a message (journaled)', sendForm);
  const messages = h('div', { id: 'agent-messages-body' });
  const messagesPanel = panel('agent-messages', 'Recent messages', messages);
  const dead = h('div', { id: 'agent-dead-body' });
  const deadPanel = panel('agent-dead', 'Dead letters', dead);
  const snapshot = h('div', { id: 'agent-snapshot-body' });
  const snapshotPanel = panel('agent-snapshot', 'Snapshot', snapshot);
  root.append(infoPanel, statePanel, sendPanel, messagesPanel, deadPanel, snapshotPanel);
  snapshotPanel.hidden = true;

  let kind = null;
  let query = null;
  let queryTouched = false;

  async function runQuery() {
    if (query === null) return;
    try {
      const answer = await api.post(`/agents/${encodeURIComponent(id)}/query`, query);
      statePanel.hidden = false;
      state.replaceChildren(kind === 'assistant' && query === 'transcript'
        ? transcriptView(answer)
        : h('pre', { class: 'result', id: 'agent-state-value' }, json(answer)));
    } catch (e) {
      if (e.status === 400) state.replaceChildren(h('p', { class: 'muted' }, e.message));
      else failed(statePanel, e, state);
    }
  }
  queryForm.addEventListener('submit', (e) => {
    e.preventDefault();
    try {
      query = JSON.parse(queryInput.value);
      queryTouched = true;
      runQuery();
    } catch (err) {
      ctx.say(`Not JSON: ${err.message}`, 'error');
    }
  });

  async function deliver(how) {
    let body;
    try {
      body = JSON.parse(message.value);
    } catch (err) {
      ctx.say(`The message is not JSON: ${err.message}`, 'error');
      return;
    }
    try {
      const answer = await api.post(`/agents/${encodeURIComponent(id)}/${how === 'ask' ? 'ask' : 'messages'}`, body);
      sendResult.hidden = false;
      sendResult.textContent = how === 'ask' ? json(answer) : 'Accepted: durably journaled.';
      ctx.say(how === 'ask' ? 'Answered' : 'Message sent');
      refresh();
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 403) {
        ctx.say('This token may not message this agent.', 'error');
      } else {
        ctx.say(e.message, 'error');
      }
    }
  }
  sendForm.addEventListener('submit', (e) => {
    e.preventDefault();
    deliver('send');
  });
  sendForm.querySelector('#ask-button').addEventListener('click', () => deliver('ask'));

  async function refreshInfo() {
    try {
      const a = await api.get(`/agents/${encodeURIComponent(id)}`);
      infoPanel.hidden = false;
      if (kind === null) {
        kind = a.kind;
        if (!queryTouched) {
          query = kind === 'assistant' ? 'transcript' : kind === 'counter' ? 'get' : null;
          queryInput.value = query === null ? '' : JSON.stringify(query);
        }
        if (!message.value) message.value = kind === 'counter' ? '{"add": 1}' : kind === 'assistant' ? '{"user": "Hello"}' : '{}';
      }
      info.replaceChildren(h('dl', { class: 'facts' },
        h('dt', {}, 'kind'), h('dd', {}, a.kind),
        h('dt', {}, 'status'), h('dd', {}, status(a.status)),
        h('dt', {}, 'parent'), h('dd', {}, a.parent ? h('a', { href: `#/agent/${encodeURIComponent(a.parent)}` }, a.parent) : '—'),
        h('dt', {}, 'durable'), h('dd', {}, String(a.durable)),
        a.restarts === undefined ? null : [h('dt', {}, 'restarts'), h('dd', { id: 'agent-restarts' }, String(a.restarts))],
        a.halted ? [h('dt', {}, 'halted'), h('dd', { class: 'error' }, a.halted)] : null));
      if (a.snapshot !== undefined) {
        snapshotPanel.hidden = false;
        snapshot.replaceChildren(a.snapshot
          ? h('p', {}, `Latest snapshot at message ${a.snapshot.seq} (${a.snapshot.bytes} bytes): recovery replays only what came after it.`)
          : h('p', { class: 'muted' }, 'No snapshot: recovery replays the whole stream.'));
      }
    } catch (e) {
      if (e instanceof api.ApiError && e.status === 404) {
        info.replaceChildren(h('p', { class: 'error' }, `No agent ${id} on this node.`));
      } else if (e instanceof api.ApiError && e.status === 403) {
        info.replaceChildren(h('p', { class: 'muted' }, 'This token may not read this agent.'));
      } else {
        failed(infoPanel, e, info);
      }
    }
  }

  async function refreshJournal() {
    let events;
    try {
      events = (await tail(2000)).filter((e) => e.stream === `agent/${id}`);
    } catch (e) {
      failed(messagesPanel, e, messages);
      failed(deadPanel, e, dead);
      return;
    }
    const msgs = events.filter((e) => base(e.kind) === 'toka.msg').slice(-20).reverse();
    messages.replaceChildren(msgs.length
      ? h('table', { class: 'events' }, h('tr', {}, h('th', {}, 'seq'), h('th', {}, 'time'), h('th', {}, 'message')),
        msgs.map((e) => h('tr', {}, h('td', {}, e.seq), h('td', {}, time(e.timestamp_micros)), h('td', {}, h('code', {}, api.payloadText(e.payload))))))
      : h('p', { class: 'muted' }, 'No messages in the last 2,000 journal records.'));
    const letters = events.filter((e) => base(e.kind) === 'toka.dead').slice(-20).reverse();
    dead.replaceChildren(letters.length
      ? h('table', { class: 'events' }, h('tr', {}, h('th', {}, 'seq'), h('th', {}, 'time'), h('th', {}, 'dead letter')),
        letters.map((e) => h('tr', {}, h('td', {}, e.seq), h('td', {}, time(e.timestamp_micros)), h('td', {}, h('code', {}, api.payloadText(e.payload))))))
      : h('p', { class: 'muted' }, 'None in the last 2,000 journal records.'));
  }

  async function refresh() {
    await refreshInfo();
    await runQuery();
    await refreshJournal();
  }
  return every(2000, refresh);
}

// ---------------------------------------------------------------- journal

function journalPage(root, _arg, ctx) {
  const stream = h('input', { id: 'filter-stream', placeholder: 'stream starts with… (agent/c1, toka/)', autocomplete: 'off' });
  const kind = h('input', { id: 'filter-kind', placeholder: 'kind contains… (msg, dead, spawn)', autocomplete: 'off' });
  const text = h('input', { id: 'filter-text', placeholder: 'payload contains…', autocomplete: 'off' });
  const live = h('input', { type: 'checkbox', id: 'live', checked: true });
  const liveState = h('span', { id: 'live-state', class: 'muted small' });
  const rows = h('tbody', { id: 'journal-rows' });
  const table = h('table', { class: 'events' },
    h('thead', {}, h('tr', {}, ['position', 'time', 'stream', 'seq', 'kind', 'payload'].map((c) => h('th', {}, c)))), rows);
  const section = panel('journal-panel', 'Journal',
    h('form', { class: 'inline filters' }, stream, kind, text, h('label', {}, live, ' live tail '), liveState),
    table);
  root.append(section);

  const events = [];
  const MAX = 1000;
  const matches = (e) => (!stream.value || e.stream.startsWith(stream.value))
    && (!kind.value || e.kind.includes(kind.value))
    && (!text.value || shown(e).includes(text.value));
  const row = (e) => h('tr', { 'data-position': e.position },
    h('td', {}, e.position), h('td', {}, time(e.timestamp_micros)),
    h('td', {}, stream.value ? e.stream : h('a', { href: '#', 'data-stream': e.stream }, e.stream)),
    h('td', {}, e.seq), h('td', {}, e.kind),
    h('td', {}, h('code', {}, shown(e)), e.redacted ? h('span', { class: 'tag' }, 'redacted') : null));
  const render = () => rows.replaceChildren(...events.filter(matches).slice(-300).reverse().map(row));
  for (const input of [stream, kind, text]) input.addEventListener('input', render);
  section.querySelector('form').addEventListener('submit', (e) => e.preventDefault());
  rows.addEventListener('click', (e) => {
    const s = e.target.dataset && e.target.dataset.stream;
    if (s) {
      e.preventDefault();
      stream.value = s;
      render();
    }
  });

  let controller = null;
  let last = 0;
  async function follow() {
    controller = new AbortController();
    liveState.textContent = 'following';
    try {
      await api.stream(`/events/stream?from=${last + 1}`, (frame) => {
        if (frame.event !== 'event') return;
        const e = JSON.parse(frame.data);
        if (e.position <= last) return;
        last = e.position;
        events.push(e);
        if (events.length > MAX) events.splice(0, events.length - MAX);
        if (matches(e)) {
          rows.prepend(row(e));
          while (rows.children.length > 300) rows.lastChild.remove();
        }
      }, { signal: controller.signal });
      liveState.textContent = 'stream ended';
    } catch (e) {
      if (e.name !== 'AbortError') {
        liveState.textContent = `stream stopped: ${e.message}`;
      }
    }
  }
  function unfollow() {
    if (controller) controller.abort();
    controller = null;
    liveState.textContent = 'paused';
  }
  live.addEventListener('change', () => (live.checked ? follow() : unfollow()));

  (async () => {
    try {
      const first = await tail(500);
      events.push(...first);
      last = first.length ? first[first.length - 1].position : 0;
      render();
      if (live.checked) follow();
    } catch (e) {
      failed(section, e, rows);
    }
  })();
  return unfollow;
}

// ---------------------------------------------------------------- approvals

function approvalsPage(root, _arg, ctx) {
  const pending = h('div', { id: 'approvals-pending' });
  const decided = h('div', { id: 'approvals-decided' });
  const section = panel('approvals-panel', 'Pending approvals', pending);
  const history = panel('approvals-history', 'Decided', decided);
  root.append(section, history);

  const decide = async (id, decision, reason) => {
    try {
      const body = { decision };
      if (reason) body.reason = reason;
      await api.post(`/approvals/${encodeURIComponent(id)}`, body);
      ctx.say(`${decision === 'approve' ? 'Approved' : 'Denied'} ${id}`);
    } catch (e) {
      ctx.say(e.status === 403 ? 'This token may not decide this call.' : e.message, 'error');
    }
    refresh();
  };

  async function refresh() {
    let all;
    try {
      all = await api.get('/approvals');
    } catch (e) {
      failed(section, e, pending);
      history.hidden = section.hidden;
      return;
    }
    const open = all.filter((a) => a.status === 'pending');
    pending.replaceChildren(open.length ? h('ul', { class: 'approvals' }, open.map((a) => {
      const reason = h('input', { placeholder: 'reason (optional)', class: 'reason' });
      return h('li', { 'data-approval': a.id },
        h('div', {}, h('strong', {}, a.tool), a.agent ? [' by ', h('a', { href: `#/agent/${encodeURIComponent(a.agent)}` }, a.agent)] : ' (API call)',
          h('span', { class: 'muted small' }, ` ${a.id} · asked ${a.requested_at} · expires ${a.expires_at} · token ${a.token}`)),
        h('pre', { class: 'result' }, json(a.input)),
        h('div', { class: 'buttons' }, reason,
          h('button', { type: 'button', class: 'approve', onclick: () => decide(a.id, 'approve', reason.value) }, 'Approve'),
          h('button', { type: 'button', class: 'deny', onclick: () => decide(a.id, 'deny', reason.value) }, 'Deny')));
    })) : h('p', { class: 'muted' }, 'Nothing waits for a decision.'));
    const done = all.filter((a) => a.status !== 'pending').slice(-50).reverse();
    decided.replaceChildren(done.length ? h('table', { class: 'events' },
      h('tr', {}, ['id', 'tool', 'agent', 'status', 'by', 'reason', 'outcome'].map((c) => h('th', {}, c))),
      done.map((a) => h('tr', { 'data-approval': a.id },
        h('td', {}, a.id), h('td', {}, a.tool), h('td', {}, a.agent || '—'), h('td', {}, status(a.status)),
        h('td', {}, a.decided_by || '—'), h('td', {}, a.reason || ''),
        h('td', {}, a.error ? h('span', { class: 'error' }, a.error.message || JSON.stringify(a.error))
          : a.output !== undefined ? h('code', {}, JSON.stringify(a.output)) : a.started ? 'running' : '')))) : h('p', { class: 'muted' }, 'None yet.'));
  }
  return every(1500, refresh);
}

// ---------------------------------------------------------------- audit

function auditPage(root) {
  const denials = h('div', { id: 'audit-denials' });
  const revocations = h('div', { id: 'audit-revocations' });
  const a = panel('denials-panel', 'Denials (the last 100)', denials);
  const b = panel('revocations-panel', 'Revocations', revocations);
  const issued = h('div', { id: 'audit-issued' });
  const c = panel('issued-panel', 'Issued tokens (the last 100)', issued);
  root.append(a, b, c);

  async function refresh() {
    try {
      const d = (await api.get('/audit/denials?limit=100')).reverse();
      denials.replaceChildren(d.length ? h('table', { class: 'events' },
        h('tr', {}, ['time', 'tool', 'agent', 'token', 'reason'].map((c) => h('th', {}, c))),
        d.map((r) => h('tr', {}, h('td', {}, time(r.at_micros)), h('td', {}, r.tool),
          h('td', {}, r.agent || '—'), h('td', {}, r.token || '—'), h('td', {}, r.reason))))
        : h('p', { class: 'muted' }, 'No denials.'));
    } catch (e) {
      failed(a, e, denials);
    }
    try {
      const r = (await api.get('/tokens/revocations')).reverse().slice(0, 100);
      revocations.replaceChildren(r.length ? h('table', { class: 'events' },
        h('tr', {}, ['time', 'token', 'reason'].map((c) => h('th', {}, c))),
        r.map((v) => h('tr', {}, h('td', {}, time(v.at_micros)), h('td', {}, v.identifier), h('td', {}, v.reason))))
        : h('p', { class: 'muted' }, 'No revocations.'));
    } catch (e) {
      failed(b, e, revocations);
    }
    try {
      const t = (await api.get('/audit/tokens')).reverse().slice(0, 100);
      issued.replaceChildren(t.length ? h('table', { class: 'events' },
        h('tr', {}, ['time', 'token', 'issued by', 'caveats'].map((c) => h('th', {}, c))),
        t.map((v) => h('tr', {}, h('td', {}, time(v.at_micros)), h('td', {}, v.identifier),
          h('td', {}, v.issued_by), h('td', {}, v.caveats.length ? v.caveats.join('; ') : 'none'))))
        : h('p', { class: 'muted' }, 'No tokens issued.'));
    } catch (e) {
      failed(c, e, issued);
    }
  }
  return every(3000, refresh);
}

// ---------------------------------------------------------------- tools

function toolsPage(root) {
  const list = h('div', { id: 'tools-list' });
  const calls = h('div', { id: 'tool-calls' });
  const a = panel('tools-panel', 'Tools', list);
  const b = panel('tool-calls-panel', 'Recent calls by agents (intents and results in the journal)', calls);
  root.append(a, b);

  async function refresh() {
    try {
      const tools = await api.get('/tools');
      list.replaceChildren(tools.length ? h('table', { class: 'events' },
        h('tr', {}, ['tool', 'effect', 'description', 'input'].map((c) => h('th', {}, c))),
        tools.map((t) => h('tr', { 'data-tool': t.name },
          h('td', {}, h('code', {}, t.name)), h('td', {}, t.side_effect || t.effect || ''), h('td', {}, t.description || ''),
          h('td', {}, h('details', {}, h('summary', {}, 'schema'), h('pre', { class: 'result' }, json(t.input_schema || t.schema || {}))))))) : h('p', { class: 'muted' }, 'No tools configured.'));
    } catch (e) {
      failed(a, e, list);
    }
    try {
      const events = (await tail(2000)).filter((e) => ['toka.intent', 'toka.result'].includes(base(e.kind)));
      const recent = events.slice(-30).reverse();
      calls.replaceChildren(recent.length ? h('table', { class: 'events' },
        h('tr', {}, ['time', 'agent', 'record', 'what'].map((c) => h('th', {}, c))),
        recent.map((e) => {
          const intent = base(e.kind) === 'toka.intent';
          const text = api.payloadText(e.payload);
          // An intent starts with the effect's name: a tool (`fs.read`) or a model (`model:NAME`).
          const name = intent ? (text.match(/^[A-Za-z0-9_.:-]+/) || [text])[0] : text;
          return h('tr', {}, h('td', {}, time(e.timestamp_micros)),
            h('td', {}, h('a', { href: `#/agent/${encodeURIComponent(e.stream.replace(/^agent\//, ''))}` }, e.stream.replace(/^agent\//, ''))),
            h('td', {}, intent ? 'call' : 'result'), h('td', {}, h('code', {}, name)));
        }))
        : h('p', { class: 'muted' }, 'No effects in the last 2,000 journal records.'));
    } catch (e) {
      failed(b, e, calls);
    }
  }
  return every(3000, refresh);
}

// ---------------------------------------------------------------- metrics

/** Samples of /metrics, kept while the console is open (across page changes). */
const samples = [];
const SPAN_MS = 120000;

function rate(name, scale = 1) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const [t0, a] = samples[i - 1];
    const [t1, b] = samples[i];
    if (a[name] === undefined || b[name] === undefined || t1 <= t0) continue;
    out.push([t1, (Math.max(0, b[name] - a[name]) * scale * 1000) / (t1 - t0)]);
  }
  return out;
}

function sumOf(values, prefix) {
  let total;
  for (const [k, v] of Object.entries(values)) {
    if (k === prefix || k.startsWith(`${prefix}{`)) total = (total || 0) + v;
  }
  return total;
}

/** Takes one sample of /metrics; false if the token may not read them. */
async function sample() {
  const values = api.parseMetrics(await api.get('/metrics', { text: true }));
  // Labelled counters summed under their name (model tokens by direction, say).
  const tokens = sumOf(values, 'toka_model_tokens_total');
  if (tokens !== undefined) values.__model_tokens = tokens;
  samples.push([Date.now(), values]);
  while (samples.length && samples[0][0] < Date.now() - SPAN_MS - 5000) samples.shift();
  return values;
}

/** Samples /metrics every 2 s from sign-in on, so the charts have a history when opened. */
export function startSampler() {
  samples.length = 0;
  return every(2000, sample);
}

function metricsPage(root) {
  const numbers = h('dl', { id: 'metric-numbers', class: 'facts wide' });
  const charts = h('div', { id: 'charts', class: 'charts' });
  const section = panel('metrics-panel', 'Metrics (sampled every 2 s from /metrics since sign-in)', numbers, charts);
  root.append(section);

  async function refresh() {
    if (!samples.length) {
      try {
        await sample();
      } catch (e) {
        failed(section, e, charts);
        return;
      }
    }
    const values = samples[samples.length - 1][1];

    const latency = [];
    for (let i = 1; i < samples.length; i++) {
      const [, a] = samples[i - 1];
      const [t, b] = samples[i];
      const n = b.toka_journal_flush_wait_seconds_count - a.toka_journal_flush_wait_seconds_count;
      const s = b.toka_journal_flush_wait_seconds_sum - a.toka_journal_flush_wait_seconds_sum;
      if (n > 0) latency.push([t, (s / n) * 1000]);
      else latency.push([t, 0]);
    }
    const gauge = (name) => samples.filter(([, v]) => v[name] !== undefined).map(([t, v]) => [t, v[name]]);
    const chart = (id, title, series, unit) => h('figure', { id, class: 'chart-box' }, h('figcaption', {}, title),
      lineChart(series, { spanMs: SPAN_MS, unit }),
      h('div', { class: 'legend' }, series.map((s, i) => h('span', { class: `key s${i}` }, s.label))));
    const figures = [
      chart('chart-messages', 'Messages / s', [
        { label: 'handled', points: rate('toka_messages_handled_total') },
        { label: 'sent over the API', points: rate('toka_api_messages_total') },
      ], ''),
      chart('chart-fsync', 'Journal flush wait, mean per append (ms)', [{ label: 'fsync', points: latency }], ' ms'),
      chart('chart-restarts', 'Agent restarts (total)', [{ label: 'restarts', points: gauge('toka_agent_restarts_total') }], ''),
    ];
    if (values.__model_tokens !== undefined) {
      figures.push(chart('chart-tokens', 'Model tokens / s', [
        { label: 'tokens', points: rate('__model_tokens') },
      ], ''));
    } else {
      figures.push(h('figure', { id: 'chart-tokens', class: 'chart-box' }, h('figcaption', {}, 'Model tokens'), h('p', { class: 'muted' }, 'This node reports no model token counter.')));
    }
    figures.push(chart('chart-tools', 'Tool calls / s', [
      { label: 'calls', points: rate('toka_tool_calls_total') },
      { label: 'denials', points: rate('toka_tool_denials_total') },
    ], ''));
    charts.replaceChildren(...figures);
    const show = [
      ['agents', values.toka_agents], ['running', values.toka_agents_running],
      ['journal head', values.toka_journal_head_position], ['messages handled', values.toka_messages_handled_total],
      ['restarts', values.toka_agent_restarts_total], ['tool calls', values.toka_tool_calls_total],
      ['tool denials', values.toka_tool_denials_total], ['model tokens', values.__model_tokens],
      ['recovery', values.toka_recovery_seconds === undefined ? undefined : `${short(values.toka_recovery_seconds * 1000)} ms`],
    ];
    numbers.replaceChildren(...show.filter(([, v]) => v !== undefined).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'number' ? short(v) : v)]));
  }
  return every(2000, refresh);
}

/** Every page by its name in the URL (`#/name/arg`). */
export const pages = {
  tree: treePage,
  agent: agentPage,
  journal: journalPage,
  approvals: approvalsPage,
  audit: auditPage,
  tools: toolsPage,
  metrics: metricsPage,
};
