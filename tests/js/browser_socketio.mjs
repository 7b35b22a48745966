// socket.io-client's browser bundle (dist/socket.io.min.js) in real headless Chromium, driven
// by playwright-core (/usr/bin/chromium; no browser is ever downloaded), against shardgate with
// connection state recovery on.
//
// usage: node browser_socketio.mjs   with env:
//   SIO_URL      http://127.0.0.1:PORT (the client port)   WS_URL  ws://.../connection/websocket
//   SIO_TOKEN    connection JWT of the Socket.IO client     CF_TOKEN  of the Centrifugo client
//   SIO_PAGE     an http:// page on 127.0.0.1 to run in (Chromium blocks a public page such as
//                about:blank from reaching a loopback address)
//   SIO_ROOM     a fresh room name                          SIO_TIMEOUT_MS hard deadline (default 30000)
//
// In one page: a Socket.IO client with default options (long-polling, then the upgrade) joins
// a room with an ack; a Centrifugo client (dist/centrifuge.js, JSON) publishes 5 messages there
// and gets the Socket.IO client's own publish; an rpc ack round trip; then the Socket.IO
// client's WebSocket is closed under it, 3 more are published, and it reconnects with
// `socket.recovered` true and all 8 in order. Prints one JSON line; exit 0 on success, 1 on failure.

import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { chromium } from 'playwright-core';

const env = process.env;
const timeoutMs = Number(env.SIO_TIMEOUT_MS || 30000);
const here = dirname(fileURLToPath(import.meta.url));
const sioBundle = join(here, 'node_modules', 'socket.io-client', 'dist', 'socket.io.min.js');
const cfBundle = join(here, 'node_modules', 'centrifuge', 'dist', 'centrifuge.js');

const browser = await chromium.launch({
  executablePath: env.SIO_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-background-networking'],
});
const timer = setTimeout(() => { process.stderr.write('timeout\n'); process.exit(1); }, timeoutMs);
const logs = [];
try {
  const page = await browser.newPage();
  page.on('console', (m) => logs.push(`console: ${m.text()}`));
  await page.goto(env.SIO_PAGE);
  await page.addScriptTag({ path: sioBundle });
  await page.addScriptTag({ path: cfBundle });
  const result = await page.evaluate(async ({ sioUrl, wsUrl, sioToken, cfToken, room }) => {
    const waitFor = async (cond, what) => {
      const end = Date.now() + 15000;
      while (!cond()) {
        if (Date.now() > end) throw new Error(`timed out: ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    const socket = window.io(sioUrl, { auth: { token: sioToken } });
    const firstTransport = socket.io.engine.transport.name;
    const upgrades = [];
    socket.io.engine.on('upgrade', (t) => upgrades.push(t.name));
    await new Promise((resolve, reject) => { socket.once('connect', resolve); socket.once('connect_error', reject); });
    const recoveredAtFirst = socket.recovered;
    const got = [];
    socket.on('publication', (p) => got.push(p.data.k));
    const subAck = await socket.emitWithAck('subscribe', { channel: room });
    const c = new window.Centrifuge(wsUrl, { token: cfToken });
    const fromSio = [];
    const sub = c.newSubscription(room);
    sub.on('publication', (ctx) => { if (ctx.data.from === 'sio') fromSio.push(ctx.data); });
    sub.subscribe();
    c.connect();
    await sub.ready(10000);
    for (let k = 0; k < 5; k++) await c.publish(room, { k });
    await waitFor(() => got.length === 5, 'five publications');
    const publishAck = await socket.emitWithAck('publish', { channel: room, data: { from: 'sio' } });
    await waitFor(() => fromSio.length === 1, 'socket.io -> centrifugo');
    const rpcAck = await socket.emitWithAck('rpc', { method: 'echo', data: { hello: 'chromium' } });
    await waitFor(() => socket.io.engine.transport.name === 'websocket', 'the upgrade');
    // Close the WebSocket under the client (not socket.disconnect()): it reconnects by itself.
    const reconnected = new Promise((resolve) => socket.io.once('reconnect', resolve));
    socket.io.engine.transport.ws.close();
    for (let k = 5; k < 8; k++) await c.publish(room, { k });
    await reconnected;
    await waitFor(() => got.length >= 8 && socket.connected, 'recovered publications');
    const out = {
      firstTransport, upgrades, recoveredAtFirst, recovered: socket.recovered, got: got.filter((k) => k !== undefined),
      subAck, publishAck, rpcAck,
    };
    socket.disconnect();
    c.disconnect();
    return out;
  }, { sioUrl: env.SIO_URL, wsUrl: env.WS_URL, sioToken: env.SIO_TOKEN, cfToken: env.CF_TOKEN, room: env.SIO_ROOM });
  process.stdout.write(JSON.stringify({ ok: true, ...result }) + '\n');
  clearTimeout(timer);
  await browser.close();
  process.exit(0);
} catch (err) {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n${logs.join('\n')}\n`);
  await browser.close().catch(() => {});
  process.exit(1);
}
