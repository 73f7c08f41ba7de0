// The console in a real browser: Playwright (playwright-core) driving Debian's headless
// Chromium against a real toka-node, started by toka-node/tests/console.rs.
//
// Environment: TOKA_URL (the node), TOKA_CHROMIUM (the browser), TOKA_SHOTS (where the
// screenshots go), TOKA_ADMIN_TOKEN, TOKA_OPERATOR_TOKEN (revoked at the end),
// TOKA_LIMITED_TOKEN (agent routes only), TOKA_READER_TOKEN (fs.read only).
//
// When it needs the host (the Rust test) it prints `@@ WHAT` and waits for a line `ok` on
// stdin: `@@ revoke` revokes the operator token. Progress lines start with `step`.
// Exits non-zero on the first failed check.

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { join } from 'node:path';

const env = process.env;
const url = env.TOKA_URL;
const shots = env.TOKA_SHOTS;
const WAIT = { timeout: 20000 };
const input = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function step(text) {
  console.log(`step ${text}`);
}

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

async function host(what) {
  console.log(`@@ ${what}`);
  const { value, done } = await input.next();
  check(!done && value.trim() === 'ok', `the host did ${what} (answered ${value})`);
}

async function api(method, path, token, body) {
  const res = await fetch(url + path, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

const browser = await chromium.launch({
  executablePath: env.TOKA_CHROMIUM,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
// Script errors and CSP violations fail the test; a refused API call (403/404: a hidden
// panel) is how the console learns what the token may see, so those are expected.
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
});

const shot = async (name) => {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
  console.log(`shot ${name}.png`);
};

async function signIn(token) {
  await page.waitForSelector('#sign-in', WAIT);
  await page.fill('#token', token);
  await page.click('#sign-in button[type=submit]');
}

async function signOut() {
  await page.click('#sign-out');
  await page.waitForSelector('#sign-in', WAIT);
}

async function visible(selector) {
  return page.locator(selector).first().isVisible();
}

try {
  step('the console loads with its security headers, asks for a token');
  const res = await page.goto(`${url}/ui`);
  check(res.status() === 200, `GET /ui is 200 (${res.status()})`);
  const csp = res.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("default-src 'none'"), `a strict CSP (${csp})`);
  await page.waitForSelector('#sign-in', WAIT);
  await shot('01-sign-in');

  step('a token the node does not know is refused on the sign-in form');
  await signIn('not-a-token');
  await page.waitForSelector('#sign-in-error:not([hidden])', WAIT);
  check((await page.textContent('#sign-in-error')).includes('refused'), 'the refusal is said');

  step('sign in with the admin token: the tree');
  await page.fill('#token', env.TOKA_ADMIN_TOKEN);
  await page.click('#sign-in button[type=submit]');
  await page.waitForSelector('#page-tree #tree', WAIT);
  check(await page.evaluate(() => sessionStorage.length === 1 && localStorage.length === 0), 'the token is in sessionStorage only');

  step('spawn over the API: the tree shows the agents without a reload');
  check((await api('POST', '/agents', env.TOKA_ADMIN_TOKEN, { id: 'team', kind: 'supervisor', args: { strategy: 'one_for_one', max_restarts: 5, within_secs: 60 } })).status === 201, 'spawned team');
  check((await api('POST', '/agents', env.TOKA_ADMIN_TOKEN, { id: 'c1', kind: 'counter', parent: 'team' })).status === 201, 'spawned c1');
  await page.waitForSelector('#tree li[data-agent="team"] li[data-agent="c1"][data-status="running"]', WAIT);
  check(await visible('#tree li[data-agent="c1"] .restarts'), 'restart counts shown');
  await shot('02-tree');

  step('an agent: send a message from the UI, see its state and the message');
  await page.click('#tree li[data-agent="c1"] > a');
  await page.waitForSelector('#page-agent #agent-info dl', WAIT);
  await page.fill('#message', '{"add": 5}');
  await page.click('#send-button');
  await page.waitForFunction(() => /"value": 5/.test(document.querySelector('#agent-state-value')?.textContent || ''), null, WAIT);
  await page.waitForSelector('#agent-messages-body table tr:nth-child(2)', WAIT);
  check(!(await visible('#agent-dead-body table')), 'no dead letters');
  await shot('03-agent');

  step("an assistant's transcript with its tool call");
  const spawned = await api('POST', '/agents', env.TOKA_ADMIN_TOKEN, {
    id: 'helper',
    kind: 'assistant',
    args: { model: 'local', system: 'You answer questions about files.', tools: ['fs.read'], max_steps: 4, token: env.TOKA_ADMIN_TOKEN },
  });
  check(spawned.status === 201, `spawned helper (${JSON.stringify(spawned.body)})`);
  const asked = await api('POST', '/agents/helper/ask', env.TOKA_ADMIN_TOKEN, { user: 'When is the meeting?' });
  check(asked.status === 200 && asked.body.answer === 'On Thursday, in room B.', `the assistant answered (${JSON.stringify(asked.body)})`);
  await page.goto(`${url}/ui#/agent/helper`);
  await page.waitForSelector('#agent-state .transcript .tool-call', WAIT);
  check((await page.textContent('#agent-state .transcript')).includes('fs.read'), 'the tool call is shown');
  check((await page.textContent('#agent-state .transcript')).includes('On Thursday, in room B.'), 'the answer is shown');
  await shot('04-assistant');

  step('the journal: filter, live tail');
  await page.goto(`${url}/ui#/journal`);
  await page.waitForSelector('#journal-rows tr', WAIT);
  await page.fill('#filter-stream', 'agent/c1');
  const before = await page.locator('#journal-rows tr').count();
  check((await api('POST', '/agents/c1/messages', env.TOKA_ADMIN_TOKEN, { add: 2 })).status === 202, 'sent c1 a message');
  await page.waitForFunction((n) => document.querySelectorAll('#journal-rows tr').length > n, before, WAIT);
  check(await page.evaluate(() => [...document.querySelectorAll('#journal-rows tr td:nth-child(3)')].every((td) => td.textContent === 'agent/c1')), 'only agent/c1 rows');
  check((await page.textContent('#live-state')) === 'following', 'the live tail follows');
  await page.fill('#filter-stream', '');
  await shot('05-journal');

  step('audit: a denial');
  const denied = await api('POST', '/tools/fs.list/invoke', env.TOKA_READER_TOKEN, { path: '.' });
  check(denied.status === 403, `fs.list refused to a fs.read token (${denied.status})`);
  await page.goto(`${url}/ui#/audit`);
  await page.waitForFunction(() => (document.querySelector('#audit-denials')?.textContent || '').includes('fs.list'), null, WAIT);
  // The admin token was issued by init; its record names no token, only its identifier.
  await page.waitForFunction(() => (document.querySelector('#audit-issued')?.textContent || '').includes('init'), null, WAIT);
  await shot('06-audit');

  step('tools and their recent calls');
  await page.goto(`${url}/ui#/tools`);
  await page.waitForSelector('#tools-list tr[data-tool="fs.read"]', WAIT);
  await page.waitForFunction(() => (document.querySelector('#tool-calls')?.textContent || '').includes('helper'), null, WAIT);
  await shot('07-tools');

  step('approvals: approve a pending call');
  const pending = await api('POST', '/tools/fs.write/invoke', env.TOKA_ADMIN_TOKEN, { path: 'approved.txt', content: 'approved in the console' });
  check(pending.status === 202 && pending.body.status === 'pending', `fs.write waits for approval (${pending.status} ${JSON.stringify(pending.body)})`);
  const id = pending.body.approval;
  await page.goto(`${url}/ui#/approvals`);
  await page.waitForSelector(`#approvals-pending li[data-approval="${id}"] button.approve`, WAIT);
  await shot('08-approvals');
  await page.fill(`#approvals-pending li[data-approval="${id}"] input.reason`, 'looks fine');
  await page.click(`#approvals-pending li[data-approval="${id}"] button.approve`);
  await page.waitForSelector(`#approvals-decided tr[data-approval="${id}"] .status.approved`, WAIT);
  const decided = await api('GET', `/approvals/${id}`, env.TOKA_ADMIN_TOKEN);
  check(decided.body.status === 'approved' && decided.body.reason === 'looks fine', `approved with the reason (${JSON.stringify(decided.body)})`);
  console.log(`approved ${id}`);
  await shot('09-approvals-decided');

  step('metrics as charts');
  await page.goto(`${url}/ui#/metrics`);
  // Sampled since sign-in: each chart has a line of several points.
  for (const chart of ['chart-messages', 'chart-fsync', 'chart-restarts', 'chart-tokens']) {
    await page.waitForFunction((id) => [...document.querySelectorAll(`#${id} svg path.line`)].some((p) => p.getAttribute('d').includes('L')), chart, WAIT);
  }
  // The assistant's turn used tokens: some point of that line is above the chart's zero.
  const ys = await page.evaluate(() => [...document.querySelectorAll('#chart-tokens svg path.line')]
    .flatMap((p) => [...p.getAttribute('d').matchAll(/[ML][\d.]+,([\d.]+)/g)].map((m) => Number(m[1]))));
  check(ys.length > 1 && Math.min(...ys) < Math.max(...ys), `the model tokens chart rose (${ys})`);
  check((await page.textContent('#metric-numbers')).includes('model tokens'), 'model tokens counted');
  await shot('10-metrics');

  step('a token with fewer rights sees less, never an error page');
  await signOut();
  await signIn(env.TOKA_LIMITED_TOKEN);
  await page.waitForSelector('#page-tree #tree li[data-agent="c1"]', WAIT);
  // (Approvals stay: GET /approvals lists only what a token may see, so it answers [] here.)
  for (const hidden of ['journal', 'audit', 'tools', 'metrics']) {
    check(!(await visible(`#nav a[data-page="${hidden}"]`)), `no ${hidden} link for an agents-only token`);
  }
  await page.goto(`${url}/ui#/agent/c1`);
  await page.waitForFunction(() => /"value": 7/.test(document.querySelector('#agent-state-value')?.textContent || ''), null, WAIT);
  // The journal panels hide themselves (403) rather than erroring.
  await page.waitForFunction(() => document.querySelector('#agent-messages')?.hidden === true, null, WAIT);
  check(await page.evaluate(() => [...document.querySelectorAll('.error')].every((e) => !e.offsetParent)), 'no visible error');
  await shot('11-limited');
  // A page it may not see leads to one it may.
  await page.goto(`${url}/ui#/metrics`);
  await page.waitForSelector('#page-tree', WAIT);

  step('a revoked token is signed out');
  await signOut();
  await signIn(env.TOKA_OPERATOR_TOKEN);
  await page.waitForSelector('#page-tree #tree li[data-agent="c1"]', WAIT);
  await host('revoke');
  await page.waitForFunction(() => (document.querySelector('#sign-in-error')?.textContent || '').includes('Signed out'), null, { timeout: 30000 });
  check(await page.evaluate(() => sessionStorage.length === 0), 'the token is forgotten');
  await shot('12-signed-out');

  check(problems.length === 0, `no script error or CSP violation: ${problems.join(' | ')}`);
  console.log('scenario passed');
} catch (e) {
  console.error(`FAILED: ${e.stack || e}`);
  try {
    await shot('failure');
  } catch {
    // No page to show.
  }
  if (problems.length) console.error(`page problems: ${problems.join(' | ')}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  process.exit(process.exitCode ?? 0);
}
