// npm socket.io-client 4.x with its default options (polling, then the upgrade) against
// shardgate: two sockets, subscribe with acks, publish, receive; a binary custom event.
import { io } from "socket.io-client";

const url = process.argv[2];
const timeout = Number(process.env.SIO_TIMEOUT_MS || 15000);
const deadline = setTimeout(() => { console.log("TIMEOUT in step", step); process.exit(2); }, timeout);
let step = "connect";

function connected(socket) {
  return new Promise((resolve, reject) => {
    socket.on("connect", resolve);
    socket.on("connect_error", reject);
  });
}

const a = io(url, { auth: { token: process.env.SIO_TOKEN } });
const b = io(url, { auth: { token: process.env.SIO_TOKEN } });
await Promise.all([connected(a), connected(b)]);
step = "subscribe";
const got = [];
b.on("publication", (p) => got.push(p));
for (const s of [a, b]) {
  const r = await s.emitWithAck("subscribe", { channel: "js-room" });
  if (r.error) throw new Error("subscribe: " + JSON.stringify(r));
}
step = "publish";
for (let i = 0; i < 5; i++) {
  const r = await a.emitWithAck("publish", { channel: "js-room", data: { i } });
  if (r.error) throw new Error("publish: " + JSON.stringify(r));
}
while (got.length < 5) await new Promise((r) => setTimeout(r, 10));
if (got.map((p) => p.data.i).join() !== "0,1,2,3,4") throw new Error("order " + JSON.stringify(got));
step = "binary";
const rev = await a.emitWithAck("reverse", Buffer.from([1, 2, 3]));
if (Buffer.from(rev.reversed).toString("hex") !== "030201") throw new Error("binary " + JSON.stringify(rev));
step = "upgrade";
while (a.io.engine.transport.name !== "websocket") await new Promise((r) => setTimeout(r, 10));
console.log("OK", a.io.engine.transport.name, got.length);
clearTimeout(deadline);
a.disconnect();
b.disconnect();
