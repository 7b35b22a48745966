// Peer: node socket.io (websocket transport only, no compression); fan-out = room broadcast.
// Events: "s" (ack) joins the room; "p" DATA -> every member gets event "m" DATA, sender gets "a";
// "e" DATA -> sender gets event "e" DATA.
import http from 'node:http';
import { Server } from 'socket.io';

const portArg = process.argv.indexOf('--port');
const port = portArg > 0 ? Number(process.argv[portArg + 1]) : 0;
const server = http.createServer();
const io = new Server(server, { transports: ['websocket'], perMessageDeflate: false, httpCompression: false,
                                maxHttpBufferSize: 1 << 20, pingInterval: 25000, pingTimeout: 20000 });
io.on('connection', (socket) => {
  socket.on('s', (ack) => { socket.join('fan'); if (typeof ack === 'function') ack(); });
  socket.on('p', (data) => { io.to('fan').emit('m', data); socket.emit('a'); });
  socket.on('e', (data) => socket.emit('e', data));
});
server.listen(port, '127.0.0.1', 4096, () => console.log(`PEER READY port=${server.address().port}`));
process.on('SIGTERM', () => process.exit(0));
