// Peer: node `ws`, perMessageDeflate off; fan-out = send() per subscriber.
// Framing: "s" subscribe -> "s"; "p"+DATA -> DATA to every subscriber, then "a"; "e"+DATA -> DATA.
import { WebSocketServer } from 'ws';

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const subs = new Set();
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096,
                                  maxPayload: 1 << 20 });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  ws.on('message', (buf, isBinary) => {
    const op = buf[0];
    if (op === 0x70) {            // p
      const msg = buf.toString('utf8', 1);
      for (const s of subs) s.send(msg);
      ws.send('a');
    } else if (op === 0x65) {     // e
      ws.send(buf.toString('utf8', 1));
    } else if (op === 0x73) {     // s
      subs.add(ws);
      ws.send('s');
    }
  });
  ws.on('close', () => subs.delete(ws));
});
wss.on('listening', () => console.log(`PEER READY port=${wss.address().port}`));
process.on('SIGTERM', () => process.exit(0));
