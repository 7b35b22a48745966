// The web admin (internal port) and the demo chat (client port) in real headless Chromium,
// driven by playwright-core (which never downloads a browser: /usr/bin/chromium is used).
//
// usage: node browser_e2e.mjs   with env:
//   E2E_ADMIN_URL     http://127.0.0.1:PORT/admin      E2E_PASSWORD  the admin password
//   E2E_DEMO_URL      http://127.0.0.1:PORT/           E2E_CHANNEL   a fresh channel name
//   E2E_OUT_DIR       where screenshots and the profile go
//   E2E_WORKERS       worker rows the admin must show  E2E_TIMEOUT_MS hard deadline (default 40000)
//   E2E_CHROMIUM      browser binary (default /usr/bin/chromium)
//
// Steps: a wrong password is refused; log in; see the worker rows; open the chat in a second
// tab; publish from the admin and see it arrive in the chat; send from the chat and see it in
// the admin's history and the channel in the admin's channel list; screenshot both tabs.
// Prints one JSON line to stdout; exit 0 on success, 1 on any failure (with the step and the
// pages' console logs on stderr).

import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const adminUrl = env.E2E_ADMIN_URL;
const demoUrl = env.E2E_DEMO_URL;
const password = env.E2E_PASSWORD;
const channel = env.E2E_CHANNEL || 'chat';
const outDir = env.E2E_OUT_DIR || '.';
const workers = Number(env.E2E_WORKERS || 1);
const timeoutMs = Number(env.E2E_TIMEOUT_MS || 40000);
const executablePath = env.E2E_CHROMIUM || '/usr/bin/chromium';
const nonce = Math.random().toString(36).slice(2, 10);

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
    viewport: { width: 1280, height: 860 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
      '--disable-component-update', '--disable-sync'],
  });
  const watch = (page, name) => {
    page.on('console', (m) => logs.push(`[${name} console.${m.type()}] ${m.text()}`));
    page.on('pageerror', (e) => logs.push(`[${name} pageerror] ${e.message}`));
  };
  const admin = context.pages()[0] || await context.newPage();
  watch(admin, 'admin');

  step = 'admin: open';
  const resp = await admin.goto(adminUrl);
  if (resp.status() !== 200) throw new Error(`admin page HTTP ${resp.status()}`);
  await admin.waitForSelector('#password', { state: 'visible' });

  step = 'admin: wrong password refused';
  await admin.fill('#password', password + '-wrong');
  await admin.click('#login-btn');
  await admin.waitForFunction(() => document.getElementById('login-error').textContent === 'wrong password');

  step = 'admin: log in';
  await admin.fill('#password', password);
  await admin.click('#login-btn');
  await admin.waitForSelector('#app', { state: 'visible' });

  step = 'admin: worker rows';
  await admin.waitForFunction((n) => document.querySelectorAll('#nodes tr.worker').length >= n, workers);
  const workerRows = await admin.$$eval('#nodes tr.worker', (rows) => rows.map((r) => r.cells[0].textContent));

  step = 'demo: open';
  const demo = await context.newPage();
  watch(demo, 'demo');
  const demoResp = await demo.goto(`${demoUrl}?channel=${encodeURIComponent(channel)}`);
  if (demoResp.status() !== 200) throw new Error(`demo page HTTP ${demoResp.status()}`);
  await demo.waitForFunction(() => document.getElementById('state').textContent === 'connected');
  step = 'demo: own presence';
  await demo.waitForFunction(() => document.querySelectorAll('#presence li').length >= 1);

  step = 'admin: publish';
  const fromAdmin = `hello from the admin ${nonce}`;
  await admin.fill('#pub-channel', channel);
  await admin.fill('#pub-data', JSON.stringify({ user: 'admin', text: fromAdmin }));
  await admin.click('#pub-btn');
  await admin.waitForFunction(() => /"offset"/.test(document.getElementById('pub-out').textContent));

  step = 'demo: admin message arrives';
  await demo.waitForFunction((t) => [...document.querySelectorAll('#messages li.msg')]
    .some((li) => li.textContent.includes(t)), fromAdmin);

  step = 'demo: send';
  const fromChat = `hello from the chat ${nonce}`;
  await demo.fill('#text', fromChat);
  await demo.click('#send');
  await demo.waitForFunction((t) => [...document.querySelectorAll('#messages li.msg')]
    .some((li) => li.textContent.includes(t)), fromChat);

  step = 'admin: history shows the chat message';
  await admin.fill('#hist-channel', channel);
  await admin.click('#hist-btn');
  await admin.waitForFunction((t) => document.getElementById('hist-out').textContent.includes(t), fromChat);

  step = 'admin: channel listed with its subscriber';
  await admin.waitForFunction((c) => [...document.querySelectorAll('#channels tr.channel')]
    .some((r) => r.cells[0].textContent === c && Number(r.cells[1].textContent) >= 1), channel);

  step = 'admin: presence';
  await admin.fill('#pres-channel', channel);
  await admin.click('#pres-btn');
  await admin.waitForFunction(() => /"client"/.test(document.getElementById('pres-out').textContent));

  step = 'admin: sparklines';
  await admin.waitForFunction(() => [...document.querySelectorAll('#nodes svg.spark polyline')]
    .some((p) => p.getAttribute('points').split(' ').length >= 2));

  step = 'screenshots';
  const shots = { admin: join(outDir, 'admin.png'), demo: join(outDir, 'demo.png') };
  await admin.screenshot({ path: shots.admin, fullPage: true });
  await demo.screenshot({ path: shots.demo });
  clearTimeout(deadline);
  await finish(0, { ok: true, workers: workerRows, channel, nonce, screenshots: shots });
}

main().catch((err) => finish(1, { ok: false, step, error: String(err && err.stack || err) }));
