// Peer: uWS.js (npm `uwebsockets`, an unofficial republish of the uWebSockets.js binaries), compression
// off; fan-out = uWS pub/sub app.publish() (its native broadcast). Framing as ws_peer.mjs.
import { createRequire } from 'node:module';
const require = createRequire(import.meta.url);
let uWS;
try {
  uWS = require('uwebsockets');
} catch (e) {
  console.error(`uwebsockets does not load: ${e.message}`);
  process.exit(3);
}
const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const dec = new TextDecoder();
const app = uWS.App().ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1 << 20,
  maxBackpressure: 64 << 20,
  idleTimeout: 0,
  message: (ws, message, isBinary) => {
    const bytes = new Uint8Array(message);
    const op = bytes[0];
    if (op === 0x70) {            // p
      app.publish('fan', bytes.subarray(1), false);
      ws.send('a', false);
    } else if (op === 0x65) {     // e
      ws.send(bytes.subarray(1), false);
    } else if (op === 0x73) {     // s
      ws.subscribe('fan');
      ws.send('s', false);
    }
  },
}).listen('127.0.0.1', port, (token) => {
  if (!token) { console.error('uws: listen failed'); process.exit(4); }
  console.log(`PEER READY port=${uWS.us_socket_local_port(token)}`);
});
process.on('SIGTERM', () => process.exit(0));
