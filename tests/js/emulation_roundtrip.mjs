// centrifuge-js (npm `centrifuge` 5.x) over shardgate's bidirectional emulation on node >= 20:
// `transports` limited to one of http_stream (node's fetch + ReadableStream) or sse (npm
// `eventsource` as the EventSource), commands posted to /emulation.
//
// usage: node emulation_roundtrip.mjs <http-base-url> <channel> <transport>
// env:   SDK_TOKEN1, SDK_TOKEN2  connection tokens of the two clients
//        SDK_PROTOCOL            json (default) or protobuf (http_stream only)
//        SDK_TIMEOUT_MS          hard deadline (default 15000)
//
// Two clients connect and subscribe; A publishes 5 messages, both receive them in order;
// presence lists both; rpc echo and send -> message on A; then A disconnects and B's
// presence shows B alone (the server noticed the stream end). Every /emulation POST goes
// over a new TCP connection (so SO_REUSEPORT spreads them over the workers) and records
// which worker answered (X-Shardgate-Slot) next to the worker holding the stream (the slot in
// the connect result's `node`). Prints one JSON line; exit 0 on success.

import http from 'node:http';
import { EventSource } from 'eventsource';

const protocol = process.env.SDK_PROTOCOL || 'json';
const { Centrifuge } = protocol === 'protobuf'
  ? await import('centrifuge/build/protobuf')
  : await import('centrifuge');
const encode = protocol === 'protobuf' ? (v) => new TextEncoder().encode(JSON.stringify(v)) : (v) => v;
const decode = protocol === 'protobuf'
  ? (v) => (v instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(v)) : v)
  : (v) => v;

const [base, channel, transport] = process.argv.slice(2);
const timeoutMs = Number(process.env.SDK_TIMEOUT_MS || 15000);
const count = 5;
const clients = [];
const emulationPosts = []; // {status, slot}
let step = 'start';
let finished = false;

function finish(code, payload) {
  if (finished) return;
  finished = true;
  for (const c of clients) { try { c.disconnect(); } catch { /* gone */ } }
  (code === 0 ? process.stdout : process.stderr).write(JSON.stringify(payload) + '\n');
  process.exitCode = code;
  setTimeout(() => process.exit(code), 100).unref();
}
function fail(err) {
  finish(1, { ok: false, step, error: String(err && err.message ? err.message : err), posts: emulationPosts });
}
process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
const hardTimer = setTimeout(() => fail(new Error(`hard timeout after ${timeoutMs} ms`)), timeoutMs);
function check(cond, message) { if (!cond) throw new Error(`assertion failed: ${message}`); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(what, ms, pred) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

// /emulation POSTs over a fresh connection each (no keep-alive pool): the SDK reads only
// `status` from what fetch returns. Everything else goes to node's fetch.
const emulationFetch = (client) => (url, options) => {
  if (!String(url).endsWith('/emulation')) return fetch(url, options);
  return new Promise((resolve, reject) => {
    const body = options.body instanceof Uint8Array ? Buffer.from(options.body) : String(options.body);
    const req = http.request(url, { method: 'POST', agent: false, headers: options.headers }, (res) => {
      res.resume();
      res.on('end', () => {
        emulationPosts.push({ client, status: res.statusCode, slot: Number(res.headers['x-shardgate-slot']) });
        resolve({ status: res.statusCode, ok: res.statusCode < 300 });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
};

function makeClient(name, token) {
  const endpoint = `${base}/connection/${transport}`;
  const client = new Centrifuge([{ transport, endpoint }], {
    token, timeout: 5000, minReconnectDelay: 100, maxReconnectDelay: 1000,
    emulationEndpoint: `${base}/emulation`, fetch: emulationFetch(name), eventsource: EventSource,
    debug: process.env.SDK_DEBUG === '1',
  });
  const st = { name, client, errors: [], disconnects: [], messages: [], connected: null };
  client.on('connected', (ctx) => { st.connected = ctx; });
  client.on('error', (ctx) => { st.errors.push(String(ctx.error && ctx.error.message)); });
  client.on('disconnected', (ctx) => { st.disconnects.push({ code: ctx.code, reason: ctx.reason }); });
  client.on('message', (ctx) => { st.messages.push(decode(ctx.data)); });
  clients.push(client);
  return st;
}

function makeSub(st) {
  const sub = st.client.newSubscription(channel);
  const s = { sub, pubs: [], errors: [] };
  sub.on('publication', (ctx) => s.pubs.push({ data: decode(ctx.data), offset: ctx.offset }));
  sub.on('error', (ctx) => s.errors.push(String(ctx.error && ctx.error.message)));
  return s;
}

async function main() {
  const wait = Math.min(10000, timeoutMs);
  step = 'connect';
  const a = makeClient('A', process.env.SDK_TOKEN1);
  const b = makeClient('B', process.env.SDK_TOKEN2);
  a.client.connect();
  b.client.connect();
  await Promise.all([a.client.ready(wait), b.client.ready(wait)]);
  check(a.connected.transport === transport, `A connected over ${a.connected.transport}`);

  step = 'subscribe';
  const sa = makeSub(a);
  const sb = makeSub(b);
  sa.sub.subscribe();
  sb.sub.subscribe();
  await Promise.all([sa.sub.ready(wait), sb.sub.ready(wait)]);

  step = 'presence';
  const presence = await sa.sub.presence();
  const presenceClients = Object.keys(presence.clients).sort();
  check(presenceClients.length === 2, `presence shows 2 clients: ${JSON.stringify(presenceClients)}`);

  step = 'publish';
  const expected = [];
  for (let i = 0; i < count; i++) {
    const data = { seq: i, text: `hello ${i}` };
    expected.push(data);
    await sa.sub.publish(encode(data));
  }
  await until('publications on both clients', wait, () => sa.pubs.length >= count && sb.pubs.length >= count);
  for (const [label, s] of [['A', sa], ['B', sb]]) {
    check(JSON.stringify(s.pubs.map((p) => p.data)) === JSON.stringify(expected), `${label} received in order`);
    const offs = s.pubs.map((p) => p.offset);
    for (let i = 1; i < offs.length; i++) check(offs[i] === offs[i - 1] + 1, `${label} offsets ${offs}`);
  }

  step = 'rpc';
  const rpcData = { hello: 'rpc', n: 42 };
  const rpcResult = decode((await a.client.rpc('echo', encode(rpcData))).data);
  check(JSON.stringify(rpcResult) === JSON.stringify(rpcData), `rpc echo ${JSON.stringify(rpcResult)}`);

  step = 'send';
  const sendData = { hello: 'send' };
  await a.client.send(encode(sendData));
  await until('message push', wait, () => a.messages.some((m) => JSON.stringify(m) === JSON.stringify(sendData)));

  step = 'disconnect';
  const aId = a.connected.client;
  const bId = b.connected.client;
  a.client.disconnect();
  const after = await waitPresenceAlone(sb, bId, wait);

  step = 'checks';
  check(a.errors.length === 0 && b.errors.length === 0, `client errors ${a.errors} ${b.errors}`);
  check(sa.errors.length === 0 && sb.errors.length === 0, `subscription errors ${sa.errors} ${sb.errors}`);
  check(b.disconnects.length === 0, `B disconnected: ${JSON.stringify(b.disconnects)}`);
  clearTimeout(hardTimer);
  finish(0, {
    ok: true, transport, protocol, clients: { a: aId, b: bId },
    stream_slots: { A: slotOf(a), B: slotOf(b) },
    posts: emulationPosts, presence_before: presenceClients, presence_after: after,
    received_a: sa.pubs.map((p) => p.data), received_b: sb.pubs.map((p) => p.data), rpc: rpcResult,
    a_disconnects: a.disconnects,
  });
}

// The slot holding a client's stream: the client id names it (sharding/ids.py).
function slotOf(st) {
  return parseInt(st.connected.client.split('-')[4].slice(0, 4), 16);
}

async function waitPresenceAlone(sb, bId, wait) {
  const deadline = Date.now() + wait;
  for (;;) {
    const p = await sb.sub.presence();
    const ids = Object.keys(p.clients);
    if (ids.length === 1 && ids[0] === bId) return ids;
    if (Date.now() > deadline) throw new Error(`presence still ${JSON.stringify(ids)}`);
    await sleep(20);
  }
}

main().catch(fail);
