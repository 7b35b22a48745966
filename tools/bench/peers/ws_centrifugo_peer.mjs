// Peer: node `ws` (perMessageDeflate off) speaking the Centrifugo JSON client protocol, the node
// twin of centrifugo_relay_peer.py: connect (any token, no auth), subscribe, publish, rpc (echo)
// and pongs, newline-batched commands. Each command is parsed with JSON.parse; a publication is
// encoded once as a push and the same string is sent to every subscriber, one send() each.
// No history, presence, limits or error handling beyond "bad request". Against it the bench
// client does exactly the work it does against shardgate (the raw `ws_peer.mjs` gets a cheaper
// client, which on a small machine leaves the server more CPU).
import { WebSocketServer } from 'ws';
import { randomUUID } from 'node:crypto';

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const channels = new Map();  // channel -> Set of sockets
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096,
                                  maxPayload: 1 << 20 });

function handle(ws, line, out) {
  if (line === '' || line === '{}') return;  // a pong
  const cmd = JSON.parse(line);
  const id = cmd.id || 0;
  if (cmd.publish) {
    const channel = cmd.publish.channel;
    const push = '{"push":{"channel":' + JSON.stringify(channel) + ',"pub":{"data":' +
      JSON.stringify(cmd.publish.data) + '}}}';
    const subs = channels.get(channel);
    if (subs) for (const s of subs) s.send(push);
    out.push('{"id":' + id + ',"publish":{}}');
  } else if (cmd.rpc) {
    out.push('{"id":' + id + ',"rpc":{"data":' + JSON.stringify(cmd.rpc.data) + '}}');
  } else if (cmd.subscribe) {
    const channel = cmd.subscribe.channel;
    let subs = channels.get(channel);
    if (!subs) channels.set(channel, subs = new Set());
    subs.add(ws);
    ws.subs.push(channel);
    out.push('{"id":' + id + ',"subscribe":{}}');
  } else if (cmd.connect) {
    out.push('{"id":' + id + ',"connect":{"client":"' + randomUUID() +
      '","version":"node-relay","ping":25,"pong":true}}');
  } else {
    out.push('{"id":' + id + ',"error":{"code":107,"message":"bad request"}}');
  }
}

wss.on('connection', (ws) => {
  ws.subs = [];
  ws.on('error', () => {});
  ws.on('message', (buf, isBinary) => {
    const text = buf.toString('utf8');
    const out = [];
    if (text.indexOf('\n') < 0) handle(ws, text, out);
    else for (const line of text.split('\n')) handle(ws, line, out);
    if (out.length) ws.send(out.join('\n'));
  });
  ws.on('close', () => {
    for (const channel of ws.subs) {
      const subs = channels.get(channel);
      if (subs) subs.delete(ws);
    }
  });
});
wss.on('listening', () => console.log(`PEER READY port=${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
