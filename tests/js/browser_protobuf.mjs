// centrifuge-js's protobuf browser build (dist/centrifuge.protobuf.js) in real headless Chromium,
// driven by playwright-core (/usr/bin/chromium; no browser is ever downloaded).
//
// usage: node browser_protobuf.mjs   with env:
//   PB_URL        ws://127.0.0.1:PORT/connection/websocket
//   PB_TOKEN_A    connection JWT of the subscriber    PB_TOKEN_B   of the publisher
//   PB_PAGE       an http:// page on 127.0.0.1 to run in (Chromium blocks a public page such as
//                 about:blank from reaching a loopback address)
//   PB_CHANNEL    a fresh channel name                 PB_TIMEOUT_MS hard deadline (default 30000)
//
// In one page, two Centrifuge clients on the protobuf subprotocol: A subscribes (positioned,
// recoverable), B publishes 5 binary payloads; A receives them in order; history, presence and
// an rpc echo answer over protobuf; then A's transport is dropped and it recovers what B published
// meanwhile. Prints one JSON line; exit 0 on success, 1 on failure.

import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const timeoutMs = Number(env.PB_TIMEOUT_MS || 30000);
const here = dirname(fileURLToPath(import.meta.url));
const bundle = join(here, 'node_modules', 'centrifuge', 'dist', 'centrifuge.protobuf.js');

const browser = await chromium.launch({
  executablePath: env.PB_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-background-networking'],
});
const timer = setTimeout(() => { process.stderr.write('timeout\n'); process.exit(1); }, timeoutMs);
const logs = [];
try {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`console: ${m.text()}`));
  await page.goto(env.PB_PAGE);
  await page.addScriptTag({ path: bundle });
  const result = await page.evaluate(async ({ url, tokenA, tokenB, channel }) => {
    const C = window.Centrifuge;
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    const waitFor = async (cond, what) => {
      const end = Date.now() + 15000;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const a = new C(url, { token: tokenA, protocol: 'protobuf', minReconnectDelay: 50, maxReconnectDelay: 200 });
    const b = new C(url, { token: tokenB, protocol: 'protobuf' });
    const got = [];
    const subscribed = [];
    const sub = a.newSubscription(channel);
    sub.on('publication', (ctx) => got.push(JSON.parse(dec.decode(ctx.data)).k));
    sub.on('subscribed', (ctx) => subscribed.push({ recovered: ctx.recovered, wasRecovering: ctx.wasRecovering }));
    sub.subscribe();
    a.connect();
    b.connect();
    await sub.ready(10000);
    await b.ready(10000);
    for (let k = 0; k < 5; k++) await b.publish(channel, enc.encode(JSON.stringify({ k })));
    await waitFor(() => got.length === 5, 'five publications');
    const history = await sub.history({ limit: 10 });
    const presence = await sub.presence();
    const rpc = await a.rpc('echo', enc.encode(JSON.stringify({ hello: 'protobuf' })));
    // Drop A's transport (not a disconnect): it reconnects and recovers what it missed.
    a._transport.close();
    for (let k = 5; k < 8; k++) await b.publish(channel, enc.encode(JSON.stringify({ k })));
    await waitFor(() => got.length === 8, 'recovered publications');
    a.disconnect();
    b.disconnect();
    return {
      got, subscribed,
      historyOffsets: history.publications.map((p) => Number(p.offset)),
      presenceClients: Object.keys(presence.clients).length,
      rpc: JSON.parse(dec.decode(rpc.data)),
    };
  }, { url: env.PB_URL, tokenA: env.PB_TOKEN_A, tokenB: env.PB_TOKEN_B, channel: env.PB_CHANNEL });
  process.stdout.write(JSON.stringify({ ok: true, ...result }) + '\n');
  clearTimeout(timer);
  await browser.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n${logs.join('\n')}\n`);
  await browser.close().catch(() => {});
  process.exit(1);
}
