// npm socket.io-client 4.x, default options, against shardgate with connection state
// recovery on: after two publications its WebSocket is destroyed (no close frame, as when a
// network drops), three more are published meanwhile, and the client reconnects by itself:
// `socket.recovered` must be true and all five publications arrive once, in order.
import { io } from "socket.io-client";

const url = process.argv[2];
const timeout = Number(process.env.SIO_TIMEOUT_MS || 20000);
const deadline = setTimeout(() => { console.log("TIMEOUT in step", step, JSON.stringify(got)); process.exit(2); }, timeout);
let step = "connect";
const room = "js-rec-" + Math.random().toString(36).slice(2, 8);
const got = [];

function once(socket, event) {
  return new Promise((resolve, reject) => {
    socket.once(event, resolve);
    if (event === "connect") socket.once("connect_error", reject);
  });
}
const until = async (cond) => { while (!cond()) await new Promise((r) => setTimeout(r, 10)); };

const a = io(url, { auth: { token: process.env.SIO_TOKEN } });
const b = io(url, { auth: { token: process.env.SIO_TOKEN }, forceNew: true });
await Promise.all([once(a, "connect"), once(b, "connect")]);
if (a.recovered) throw new Error("recovered on a first connect");
a.on("publication", (p) => got.push(p.data.i));
step = "subscribe";
const r = await a.emitWithAck("subscribe", { channel: room });
if (r.error) throw new Error("subscribe: " + JSON.stringify(r));
for (let i = 0; i < 2; i++) await b.emitWithAck("publish", { channel: room, data: { i } });
await until(() => got.length === 2);
step = "upgrade";
await until(() => a.io.engine.transport.name === "websocket");
step = "drop";
const firstSid = a.io.engine.id;
const reconnected = once(a, "connect");
a.io.engine.transport.ws._socket.destroy();
for (let i = 2; i < 5; i++) await b.emitWithAck("publish", { channel: room, data: { i } });
step = "reconnect";
await reconnected;
await until(() => got.length >= 5);
if (got.join() !== "0,1,2,3,4") throw new Error("order " + JSON.stringify(got));
step = "live";
await b.emitWithAck("publish", { channel: room, data: { i: 5 } });
await until(() => got.length >= 6);
if (got.join() !== "0,1,2,3,4,5") throw new Error("live " + JSON.stringify(got));
console.log("OK recovered=" + a.recovered, "slots", firstSid.split("_")[0], a.io.engine.id.split("_")[0]);
clearTimeout(deadline);
a.disconnect();
b.disconnect();
