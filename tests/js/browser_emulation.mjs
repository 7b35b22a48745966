// Bidirectional emulation and uni_sse in real headless Chromium (playwright-core, /usr/bin/chromium),
// on the gateway's own origin (the page is the gateway's /centrifuge.js, admin.demo_page):
//  - centrifuge-js with transports [{transport: 'sse'}] and then [{transport: 'http_stream'}]:
//    connect, subscribe, publish, receive, presence, rpc echo;
//  - a plain EventSource on /connection/uni_sse with cf_connect: the connect push, then a
//    publication made by the sse client arrives as a bare push.
//
// env: E2E_BASE (http://127.0.0.1:PORT), E2E_TOKEN (connection token), E2E_UNI_TOKEN (token with
//      channels [E2E_CHANNEL]), E2E_CHANNEL, E2E_OUT_DIR, E2E_TIMEOUT_MS, E2E_CHROMIUM.
// Prints one JSON line; exit 0 on success.

import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const base = env.E2E_BASE;
const timeoutMs = Number(env.E2E_TIMEOUT_MS || 40000);
let step = 'start';
const logs = [];
let context = null;

async function finish(code, payload) {
  if (context) await context.close().catch(() => {});
  (code === 0 ? process.stdout : process.stderr).write(JSON.stringify(payload) + '\n' + (code ? logs.join('\n') : ''));
  process.exit(code);
}
setTimeout(() => finish(1, { ok: false, step, error: `timeout after ${timeoutMs} ms` }), timeoutMs);

async function main() {
  step = 'launch';
  context = await chromium.launchPersistentContext(mkdtempSync(join(env.E2E_OUT_DIR || '.', 'chromium-profile-')), {
    executablePath: env.E2E_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run',
      '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  step = 'open';
  const resp = await page.goto(`${base}/centrifuge.js`);
  if (resp.status() !== 200) throw new Error(`HTTP ${resp.status()}`);
  await page.addScriptTag({ url: '/centrifuge.js' });

  const results = {};
  for (const transport of ['sse', 'http_stream']) {
    step = `sdk over ${transport}`;
    results[transport] = await page.evaluate(async ({ transport, token, channel }) => {
      const c = new Centrifuge([{ transport, endpoint: `/connection/${transport}` }], { token, timeout: 5000 });
      const got = [];
      let connectedOver = null;
      c.on('connected', (ctx) => { connectedOver = ctx.transport; });
      c.connect();
      await c.ready(5000);
      const sub = c.newSubscription(`${channel}-${transport}`);
      sub.on('publication', (ctx) => got.push(ctx.data));
      sub.subscribe();
      await sub.ready(5000);
      for (let i = 0; i < 3; i++) await sub.publish({ i });
      const deadline = Date.now() + 5000;
      while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      const presence = Object.keys((await sub.presence()).clients).length;
      const rpc = (await c.rpc('echo', { hi: transport })).data;
      c.disconnect();
      return { connectedOver, got, presence, rpc };
    }, { transport, token: env.E2E_TOKEN, channel: env.E2E_CHANNEL });
  }

  step = 'uni_sse EventSource';
  results.uni_sse = await page.evaluate(async ({ uniToken, token, channel }) => {
    const events = [];
    const es = new EventSource(`/connection/uni_sse?cf_connect=${encodeURIComponent(JSON.stringify({ token: uniToken }))}`);
    es.onmessage = (e) => events.push(JSON.parse(e.data));
    const wait = async (pred, what) => {
      const deadline = Date.now() + 5000;
      while (!pred()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(events)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    await wait(() => events.some((e) => e.connect), 'connect push');
    const c = new Centrifuge([{ transport: 'sse', endpoint: '/connection/sse' }], { token, timeout: 5000 });
    c.connect();
    await c.ready(5000);
    await c.publish(channel, { via: 'uni_sse' });
    await wait(() => events.some((e) => e.pub), 'publication push');
    c.disconnect();
    es.close();
    return events;
  }, { uniToken: env.E2E_UNI_TOKEN, token: env.E2E_TOKEN, channel: env.E2E_CHANNEL });

  finish(0, { ok: true, results });
}

main().catch((e) => finish(1, { ok: false, step, error: String(e && e.message ? e.message : e) }));
