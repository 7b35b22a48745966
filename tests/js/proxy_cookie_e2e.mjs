// The connect proxy from a real browser: headless Chromium (playwright-core, /usr/bin/chromium)
// holds only a cookie for the gateway's origin, opens the demo chat there (centrifuge-js, no
// token at all), and the gateway's connect proxy learns the user from that Cookie header.
//
// usage: node proxy_cookie_e2e.mjs   with env:
//   E2E_DEMO_URL   http://127.0.0.1:PORT/   E2E_CHANNEL   channel for the chat
//   E2E_COOKIE     cookie value for "session" (the backend's user)
//   E2E_OUT_DIR    where the profile goes    E2E_TIMEOUT_MS hard deadline (default 30000)
//   E2E_CHROMIUM   browser binary (default /usr/bin/chromium)
//
// Prints one JSON line to stdout ({ok, presence}); exit 0 on success, 1 on failure (with the
// step and the page's console log on stderr).

import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const demoUrl = env.E2E_DEMO_URL;
const channel = env.E2E_CHANNEL || 'chat';
const cookie = env.E2E_COOKIE || 'alice';
const outDir = env.E2E_OUT_DIR || '.';
const timeoutMs = Number(env.E2E_TIMEOUT_MS || 30000);
const executablePath = env.E2E_CHROMIUM || '/usr/bin/chromium';

let step = 'start';
const logs = [];
let context = null;

async function finish(code, payload) {
  if (context) await context.close().catch(() => {});
  const line = JSON.stringify(payload);
  if (code === 0) process.stdout.write(line + '\n');
  else process.stderr.write(line + '\n' + logs.join('\n') + '\n');
  process.exit(code);
}

const deadline = setTimeout(() => finish(1, { ok: false, step, error: `timeout after ${timeoutMs} ms` }), timeoutMs);

async function main() {
  step = 'launch';
  context = await chromium.launchPersistentContext(mkdtempSync(join(outDir, 'chromium-profile-')), {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
      '--disable-component-update', '--disable-sync'],
  });
  step = 'cookie';
  await context.addCookies([{ name: 'session', value: cookie, url: demoUrl }]);
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));

  step = 'open';
  const resp = await page.goto(`${demoUrl}?channel=${encodeURIComponent(channel)}`);
  if (resp.status() !== 200) throw new Error(`demo page HTTP ${resp.status()}`);
  step = 'connected';
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  step = 'presence shows the cookie user';
  await page.waitForFunction((user) => [...document.querySelectorAll('#presence li')]
    .some((li) => li.textContent.startsWith(user + ' ')), cookie);
  const presence = await page.$$eval('#presence li', (items) => items.map((li) => li.textContent));
  clearTimeout(deadline);
  await finish(0, { ok: true, presence });
}

main().catch((err) => finish(1, { ok: false, step, error: String(err && err.stack || err) }));
