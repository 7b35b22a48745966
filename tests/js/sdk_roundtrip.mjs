// Round trip through shardgate with the official Centrifugo JS SDK (npm `centrifuge` 5.x)
// on node >= 20, using `ws` as the WebSocket implementation.
//
// usage: node sdk_roundtrip.mjs <ws-url> <channel> [token1] [token2]
//   (each argument may instead come from SDK_URL, SDK_CHANNEL, SDK_TOKEN1, SDK_TOKEN2)
// env:   SDK_PROTOCOL    json (default) or protobuf: the SDK's protobuf build
//                         (`centrifuge/build/protobuf`, subprotocol centrifuge-protobuf); payloads
//                         then travel as the UTF-8 bytes of their JSON and are parsed back here
//        SDK_COUNT       publications to send (default 5)
//        SDK_TIMEOUT_MS  hard deadline for the whole run (default 15000)
//        SDK_DEBUG=1     SDK debug logging to stderr
//
// Two clients (A with token1, B with token2) subscribe to <channel>; A publishes N messages
// with sub.publish; both must receive all N in order with consecutive offsets following the
// subscribe position. A also checks rpc('echo'), send() -> 'message' push, and presence()
// (2 clients). Prints one JSON line to stdout; exit 0 on success, 1 on any failure/timeout.

import WebSocket from 'ws';

const protocol = process.env.SDK_PROTOCOL || 'json';
const { Centrifuge } = protocol === 'protobuf'
  ? await import('centrifuge/build/protobuf')
  : await import('centrifuge');
// Over protobuf, data fields are bytes (Uint8Array): JSON payloads go as their UTF-8 bytes.
const encode = protocol === 'protobuf' ? (v) => new TextEncoder().encode(JSON.stringify(v)) : (v) => v;
const decode = protocol === 'protobuf'
  ? (v) => (v instanceof Uint8Array ? JSON.parse(new TextDecoder().decode(v)) : v)
  : (v) => v;

const [argUrl, argChannel, argToken1, argToken2] = process.argv.slice(2);
const url = argUrl || process.env.SDK_URL;
const channel = argChannel || process.env.SDK_CHANNEL;
const token1 = argToken1 || process.env.SDK_TOKEN1;
const token2 = argToken2 || process.env.SDK_TOKEN2;
const count = Number(process.env.SDK_COUNT || 5);
const timeoutMs = Number(process.env.SDK_TIMEOUT_MS || 15000);
const debug = process.env.SDK_DEBUG === '1';

const clients = [];
const states = [];
let step = 'start';
let finished = false;

function finish(code, payload) {
  if (finished) return;
  finished = true;
  const line = JSON.stringify(payload); // before disconnect() adds its own events
  for (const c of clients) {
    try { c.disconnect(); } catch { /* already gone */ }
  }
  if (code === 0) process.stdout.write(line + '\n');
  else process.stderr.write(line + '\n');
  // Let the close frames and the output flush, then leave even if a socket lingers.
  setTimeout(() => process.exit(code), 100).unref();
  process.exitCode = code;
}

function fail(err) {
  finish(1, {
    ok: false,
    step,
    error: String(err && err.message ? err.message : err),
    code: err && err.code !== undefined ? err.code : undefined,
    stack: err && err.stack ? String(err.stack) : undefined,
    clients: states.map((st) => ({
      name: st.name, client: st.clientId, state: st.client.state, errors: st.errors, disconnects: st.disconnects,
    })),
  });
}

process.on('unhandledRejection', fail);
process.on('uncaughtException', fail);
const hardTimer = setTimeout(() => fail(new Error(`hard timeout after ${timeoutMs} ms`)), timeoutMs);

function check(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

/** Resolve when `pred()` is true (re-evaluated on each `emitter` event), reject after ms. */
function until(what, ms, pred, subscribeTo) {
  return new Promise((resolve, reject) => {
    if (pred()) return resolve();
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    const onEvent = () => {
      if (pred()) {
        cleanup();
        resolve();
      }
    };
    const cleanup = () => {
      clearTimeout(timer);
      for (const [emitter, event] of subscribeTo) emitter.removeListener(event, onEvent);
    };
    for (const [emitter, event] of subscribeTo) emitter.on(event, onEvent);
  });
}

function makeClient(name, token) {
  const client = new Centrifuge(url, {
    token,
    websocket: WebSocket,
    debug,
    timeout: 5000,
    minReconnectDelay: 100,
    maxReconnectDelay: 1000,
  });
  const state = { name, client, clientId: null, errors: [], disconnects: [], messages: [] };
  client.on('connected', (ctx) => { state.clientId = ctx.client; state.transport = ctx.transport; });
  client.on('error', (ctx) => { state.errors.push(String(ctx.error && ctx.error.message)); });
  client.on('disconnected', (ctx) => { state.disconnects.push({ code: ctx.code, reason: ctx.reason }); });
  client.on('message', (ctx) => { state.messages.push(decode(ctx.data)); });
  clients.push(client);
  states.push(state);
  return state;
}

function makeSub(state) {
  const sub = state.client.newSubscription(channel);
  const s = { sub, pubs: [], subscribed: null, errors: [], joins: [] };
  sub.on('subscribed', (ctx) => { s.subscribed = ctx; });
  sub.on('publication', (ctx) => {
    s.pubs.push({ data: decode(ctx.data), offset: ctx.offset, user: ctx.info ? ctx.info.user : undefined });
  });
  sub.on('error', (ctx) => { s.errors.push(String(ctx.error && ctx.error.message)); });
  sub.on('join', (ctx) => { s.joins.push(ctx.info && ctx.info.client); });
  return s;
}

function checkStream(label, s, expected) {
  const got = s.pubs.map((p) => p.data);
  check(JSON.stringify(got) === JSON.stringify(expected),
    `${label}: publications out of order or wrong: got ${JSON.stringify(got)}`);
  const offsets = s.pubs.map((p) => p.offset);
  check(offsets.every((o) => Number.isInteger(o)), `${label}: offsets missing: ${JSON.stringify(offsets)}`);
  for (let i = 1; i < offsets.length; i++) {
    check(offsets[i] === offsets[i - 1] + 1, `${label}: offsets not consecutive: ${JSON.stringify(offsets)}`);
  }
  const pos = s.subscribed.streamPosition;
  check(pos && Number.isInteger(pos.offset), `${label}: subscribed without streamPosition`);
  check(offsets[0] === pos.offset + 1,
    `${label}: first offset ${offsets[0]} does not follow subscribe position ${pos.offset}`);
  return offsets;
}

async function main() {
  check(url && channel && token1 && token2,
    'usage: node sdk_roundtrip.mjs <ws-url> <channel> <token1> <token2> (or SDK_URL/SDK_CHANNEL/SDK_TOKEN1/SDK_TOKEN2)');
  const wait = Math.min(10000, timeoutMs);

  step = 'connect';
  const a = makeClient('A', token1);
  const b = makeClient('B', token2);
  a.client.connect();
  b.client.connect();
  await Promise.all([a.client.ready(wait), b.client.ready(wait)]);
  check(a.clientId && b.clientId && a.clientId !== b.clientId, 'distinct client ids');

  step = 'subscribe';
  const sa = makeSub(a);
  const sb = makeSub(b);
  sa.sub.subscribe();
  sb.sub.subscribe();
  await Promise.all([sa.sub.ready(wait), sb.sub.ready(wait)]);
  check(sa.subscribed && sb.subscribed, 'subscribed events fired');
  check(sa.subscribed.recoverable === true, `subscription recoverable (got ${sa.subscribed.recoverable})`);

  step = 'presence';
  const presence = await sa.sub.presence();
  const presenceClients = Object.keys(presence.clients || {}).sort();
  check(presenceClients.length === 2, `presence shows 2 clients, got ${JSON.stringify(presence.clients)}`);
  check(presenceClients.includes(a.clientId) && presenceClients.includes(b.clientId),
    `presence lists both client ids ${a.clientId}, ${b.clientId}: ${JSON.stringify(presenceClients)}`);

  step = 'publish';
  const nonce = `${process.pid}-${Date.now()}`;
  const expected = [];
  for (let i = 0; i < count; i++) {
    const data = { seq: i, nonce, text: `hello ${i}` };
    expected.push(data);
    await sa.sub.publish(encode(data));
  }
  await until(`${count} publications on both clients`, wait,
    () => sa.pubs.length >= count && sb.pubs.length >= count,
    [[sa.sub, 'publication'], [sb.sub, 'publication']]);
  // Give a stray duplicate a moment to show up before counting.
  await new Promise((r) => setTimeout(r, 100));
  const offsetsA = checkStream('client A', sa, expected);
  const offsetsB = checkStream('client B', sb, expected);
  check(JSON.stringify(offsetsA) === JSON.stringify(offsetsB),
    `both clients see the same offsets: A ${JSON.stringify(offsetsA)} B ${JSON.stringify(offsetsB)}`);

  step = 'rpc';
  const rpcData = { hello: 'rpc', nonce, nested: { n: 42, list: [1, 'two', null] } };
  const rpcReply = await a.client.rpc('echo', encode(rpcData));
  const rpcResult = decode(rpcReply.data);
  check(JSON.stringify(rpcResult) === JSON.stringify(rpcData),
    `rpc echo returned ${JSON.stringify(rpcResult)}`);

  step = 'send';
  const sendData = { hello: 'send', nonce };
  await a.client.send(encode(sendData));
  await until('message push echoing send()', wait,
    () => a.messages.some((m) => JSON.stringify(m) === JSON.stringify(sendData)),
    [[a.client, 'message']]);

  step = 'checks';
  check(a.errors.length === 0 && b.errors.length === 0,
    `no client errors: A ${JSON.stringify(a.errors)} B ${JSON.stringify(b.errors)}`);
  check(sa.errors.length === 0 && sb.errors.length === 0,
    `no subscription errors: A ${JSON.stringify(sa.errors)} B ${JSON.stringify(sb.errors)}`);
  check(a.disconnects.length === 0 && b.disconnects.length === 0,
    `no unexpected disconnects: A ${JSON.stringify(a.disconnects)} B ${JSON.stringify(b.disconnects)}`);

  clearTimeout(hardTimer);
  finish(0, {
    ok: true,
    protocol,
    channel,
    count,
    transport: a.transport,
    clients: { a: a.clientId, b: b.clientId },
    subscribe_offset: sa.subscribed.streamPosition.offset,
    epoch: sa.subscribed.streamPosition.epoch,
    offsets_a: offsetsA,
    offsets_b: offsetsB,
    received_a: sa.pubs.map((p) => p.data),
    received_b: sb.pubs.map((p) => p.data),
    publisher_users: sb.pubs.map((p) => p.user),
    presence_clients: presenceClients,
    rpc: rpcResult,
    message: a.messages.find((m) => JSON.stringify(m) === JSON.stringify(sendData)),
    sent: sendData,
    rpc_sent: rpcData,
  });
}

main().catch(fail);
