// Fossil delta compression end to end with the official Centrifugo JS SDK (npm `centrifuge`
// 5.x, which applies fossil deltas and keeps the previous payload per subscription), run by
// tests/integration/test_delta.py against a 2-worker gateway.
//
// env: SDK_URL, SDK_CHANNEL, SDK_TOKEN, SDK_API_URL, SDK_API_KEY
//      SDK_PROTOCOL  json (default) or protobuf
//      SDK_COUNT     live publications before and after the recovery (default 40)
//      SDK_TIMEOUT_MS
//
// Delta subscribers (delta: 'fossil') on both worker slots and one plain subscriber receive
// SDK_COUNT similar JSON documents published through the server API with `delta: true`; each
// must reconstruct every one exactly. Then one delta client disconnects, more are published,
// it reconnects and recovers, and more follow live: it must end with every document exactly
// once, in order. Prints one JSON line (stats per subscriber); exit 1 on failure.

import WebSocket from 'ws';

const protocol = process.env.SDK_PROTOCOL || 'json';
const { Centrifuge } = protocol === 'protobuf'
  ? await import('centrifuge/build/protobuf')
  : await import('centrifuge');
const decode = protocol === 'protobuf'
  ? (v) => JSON.parse(new TextDecoder().decode(v))
  : (v) => v;

const url = process.env.SDK_URL;
const channel = process.env.SDK_CHANNEL;
const token = process.env.SDK_TOKEN;
const apiUrl = process.env.SDK_API_URL;
const apiKey = process.env.SDK_API_KEY;
const count = Number(process.env.SDK_COUNT || 40);
const timeoutMs = Number(process.env.SDK_TIMEOUT_MS || 30000);

let step = 'start';
const clients = [];

function finish(code, payload) {
  for (const c of clients) {
    try { c.disconnect(); } catch { /* gone */ }
  }
  (code === 0 ? process.stdout : process.stderr).write(JSON.stringify(payload) + '\n');
  process.exitCode = code;
  setTimeout(() => process.exit(code), 100).unref();
}

function fail(err) {
  finish(1, { ok: false, step, error: String(err && err.message ? err.message : err), stack: err && err.stack });
}
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
setTimeout(() => fail(new Error(`hard timeout after ${timeoutMs} ms`)), timeoutMs).unref();

function check(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

function slotOf(clientId) {
  return parseInt(clientId.split('-')[4].slice(0, 4), 16);
}

/** A similar JSON document per sequence number: one row changes from one to the next. */
function doc(i) {
  const rows = [];
  for (let k = 0; k < 50; k++) {
    rows.push({ id: k, name: `instrument-${k}`, price: k === i % 50 ? 1000 + i : 100 + k, currency: 'EUR' });
  }
  return { seq: i, updated: `2026-01-01T00:00:${String(i % 60).padStart(2, '0')}Z`, rows };
}

async function publish(i) {
  const resp = await fetch(`${apiUrl}/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data: doc(i), delta: true }),
  });
  const body = await resp.json();
  check(resp.status === 200 && body.result, `publish ${i}: ${resp.status} ${JSON.stringify(body)}`);
}

function until(what, pred, ms = 10000) {
  return new Promise((resolve, reject) => {
    const start = Date.now();
    const poll = () => {
      if (pred()) return resolve();
      if (Date.now() - start > ms) return reject(new Error(`timeout waiting for ${what}`));
      setTimeout(poll, 10);
    };
    poll();
  });
}

async function connect(name) {
  const client = new Centrifuge(url, { websocket: WebSocket, token, minReconnectDelay: 50, maxReconnectDelay: 500 });
  clients.push(client);
  const connected = new Promise((resolve, reject) => {
    client.once('connected', (ctx) => resolve(ctx));
    client.once('disconnected', (ctx) => reject(new Error(`${name} disconnected: ${JSON.stringify(ctx)}`)));
  });
  client.connect();
  const ctx = await connected;
  return { name, client, clientId: ctx.client, slot: slotOf(ctx.client) };
}

async function subscribeAs(st, delta) {
  st.got = [];
  st.subscribed = [];
  const sub = st.client.newSubscription(channel, delta ? { delta: 'fossil' } : {});
  st.sub = sub;
  sub.on('publication', (ctx) => st.got.push({ data: decode(ctx.data), offset: ctx.offset }));
  sub.on('subscribed', (ctx) => st.subscribed.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered }));
  sub.on('error', (ctx) => fail(new Error(`${st.name} subscription error: ${JSON.stringify(ctx)}`)));
  sub.subscribe();
  await sub.ready(10000);
  return st;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function checkAll(st, from, to) {
  const want = [];
  for (let i = from; i <= to; i++) want.push(doc(i));
  const got = st.got.map((p) => p.data);
  check(got.length === want.length, `${st.name}: ${got.length} publications, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    check(same(got[i], want[i]), `${st.name}: publication ${from + i} reconstructed wrong: ${JSON.stringify(got[i]).slice(0, 200)}`);
  }
  const offsets = st.got.map((p) => p.offset);
  for (let i = 1; i < offsets.length; i++) check(offsets[i] === offsets[0] + i, `${st.name}: offsets ${offsets}`);
}

// Delta subscribers until both worker slots have one (the kernel spreads connections).
step = 'connect';
const deltaSubs = [];
const bySlot = new Map();
for (let attempt = 0; attempt < 40 && bySlot.size < 2; attempt++) {
  const st = await connect(`delta${attempt}`);
  if (bySlot.has(st.slot) && bySlot.get(st.slot).length >= 2) {
    st.client.disconnect();
    continue;
  }
  bySlot.set(st.slot, [...(bySlot.get(st.slot) || []), st]);
  deltaSubs.push(st);
}
check(bySlot.size === 2, `delta subscribers on slots ${[...bySlot.keys()]} only`);
const plain = await connect('plain');

step = 'subscribe';
for (const st of deltaSubs) await subscribeAs(st, true);
await subscribeAs(plain, false);

step = 'live';
for (let i = 1; i <= count; i++) await publish(i);
const everyone = [...deltaSubs, plain];
await until('every live publication', () => everyone.every((st) => st.got.length >= count));
for (const st of everyone) checkAll(st, 1, count);
for (const st of deltaSubs) {
  const stats = st.sub.deltaStats();
  check(stats.numDeltaPayloads >= count - 1, `${st.name}: ${JSON.stringify(stats)}`);
  check(stats.bytesReceived * 2 < stats.bytesDecoded, `${st.name}: deltas not smaller: ${JSON.stringify(stats)}`);
}
check(plain.sub.deltaStats().numPublications === 0, 'the plain subscriber got deltas');
const liveStats = deltaSubs.map((st) => ({ name: st.name, slot: st.slot, ...st.sub.deltaStats() }));

// Recovery: one delta client leaves, misses publications, comes back and recovers them.
step = 'recovery';
const back = deltaSubs[0];
back.client.disconnect();
await until('disconnected', () => back.client.state === 'disconnected');
for (let i = count + 1; i <= 2 * count; i++) await publish(i);
back.client.connect();
await until('resubscribed', () => back.subscribed.length === 2);
const recovery = back.subscribed[1];
check(recovery.wasRecovering && recovery.recovered, `recovery: ${JSON.stringify(recovery)}`);
for (let i = 2 * count + 1; i <= 3 * count; i++) await publish(i);
await until('every publication after recovery', () => everyone.every((st) => st.got.length >= 3 * count));
for (const st of everyone) checkAll(st, 1, 3 * count);
for (const st of deltaSubs) {
  const stats = st.sub.deltaStats();
  check(stats.numDeltaPayloads >= 3 * count - 3, `${st.name} after recovery: ${JSON.stringify(stats)}`);
}

finish(0, {
  ok: true, protocol, channel,
  slots: [...bySlot.keys()].sort(),
  live: liveStats,
  final: deltaSubs.map((st) => ({ name: st.name, slot: st.slot, ...st.sub.deltaStats() })),
  recovery,
});
