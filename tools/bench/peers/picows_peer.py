"""Peer: a minimal raw picows server (uvloop), the per-frame ceiling for Python.

Framing (TEXT frames, see README.md here): "s" subscribe -> "s"; "p"+DATA -> DATA to every
subscriber, one frame each (one transport.send per subscriber), then "a" to the publisher;
"e"+DATA -> DATA (echo). Prints "PEER READY port=N" once listening on 127.0.0.1.
"""

import argparse

import uvloop
from picows import WSCloseCode, WSListener, WSMsgType, ws_create_server

SUBS: set = set()
TEXT = WSMsgType.TEXT


class Peer(WSListener):
    def on_ws_connected(self, t):
        self.t = t

    def on_ws_frame(self, t, f):
        mt = f.msg_type
        if mt == TEXT:
            data = f.get_payload_as_bytes()
            op = data[:1]
            if op == b"p":
                msg = data[1:]
                for s in SUBS:
                    s.send(TEXT, msg)
                t.send(TEXT, b"a")
            elif op == b"e":
                t.send(TEXT, data[1:])
            elif op == b"s":
                SUBS.add(t)
                t.send(TEXT, b"s")
        elif mt == WSMsgType.CLOSE:
            if not t.is_close_frame_sent:
                t.send_close(WSCloseCode.OK)
            t.disconnect()

    def on_ws_disconnected(self, t):
        SUBS.discard(t)


async def main(port: int, read_buffer: int, aiofastnet: bool) -> None:
    srv = await ws_create_server(lambda req: Peer(), "127.0.0.1", port, backlog=4096,
                                 read_buffer_init_size=read_buffer, use_aiofastnet=aiofastnet)
    print(f"PEER READY port={srv.sockets[0].getsockname()[1]}", flush=True)
    await srv.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--read-buffer", type=int, default=16 * 1024, help="picows read_buffer_init_size")
    ap.add_argument("--no-aiofastnet", action="store_true", help="use uvloop's own transports")
    a = ap.parse_args()
    uvloop.run(main(a.port, a.read_buffer, not a.no_aiofastnet))
