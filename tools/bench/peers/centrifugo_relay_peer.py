"""Peer: the smallest picows server that speaks the Centrifugo JSON client protocol (uvloop).

The bench's reference for "what the protocol costs in Python without a gateway": connect (any
token, no auth), subscribe, publish, rpc (echo) and pongs, newline-batched commands; a publication
is encoded once as a push and the same bytes are sent to every subscriber of the channel, one
transport.send each. No history, presence, limits, workers or error handling beyond "bad
request". Prints "PEER READY port=N" once listening on 127.0.0.1.
"""

import argparse
import itertools
import uuid

import orjson
import uvloop
from picows import WSCloseCode, WSListener, WSMsgType, ws_create_server

TEXT = WSMsgType.TEXT
CHANNELS: dict = {}  # channel -> set of transports
IDS = itertools.count(1)


class Peer(WSListener):
    def on_ws_connected(self, t):
        self.t = t
        self.subs = []

    def on_ws_frame(self, t, f):
        mt = f.msg_type
        if mt == TEXT:
            out = []
            for line in f.get_payload_as_bytes().split(b"\n"):
                if not line or line == b"{}":
                    continue  # a pong
                cmd = orjson.loads(line)
                cid = cmd.get("id", 0)
                if "publish" in cmd:
                    body = cmd["publish"]
                    channel = body["channel"]
                    push = b'{"push":{"channel":' + orjson.dumps(channel) + b',"pub":{"data":' + \
                        orjson.dumps(body["data"]) + b"}}}"
                    for s in CHANNELS.get(channel, ()):
                        s.send(TEXT, push)
                    out.append(b'{"id":%d,"publish":{}}' % cid)
                elif "rpc" in cmd:
                    out.append(b'{"id":%d,"rpc":{"data":%s}}' % (cid, orjson.dumps(cmd["rpc"].get("data"))))
                elif "subscribe" in cmd:
                    channel = cmd["subscribe"]["channel"]
                    CHANNELS.setdefault(channel, set()).add(t)
                    self.subs.append(channel)
                    out.append(b'{"id":%d,"subscribe":{}}' % cid)
                elif "connect" in cmd:
                    client = str(uuid.UUID(int=next(IDS)))
                    out.append(b'{"id":%d,"connect":{"client":"%s","version":"relay","ping":25,"pong":true}}'
                               % (cid, client.encode()))
                else:
                    out.append(b'{"id":%d,"error":{"code":107,"message":"bad request"}}' % cid)
            if out:
                t.send(TEXT, b"\n".join(out))
        elif mt == WSMsgType.CLOSE:
            if not t.is_close_frame_sent:
                t.send_close(WSCloseCode.OK)
            t.disconnect()

    def on_ws_disconnected(self, t):
        for channel in self.subs:
            subs = CHANNELS.get(channel)
            if subs is not None:
                subs.discard(t)


async def main(port: int, read_buffer: int) -> None:
    srv = await ws_create_server(lambda req: Peer(), "127.0.0.1", port, backlog=4096,
                                 read_buffer_init_size=read_buffer)
    print(f"PEER READY port={srv.sockets[0].getsockname()[1]}", flush=True)
    await srv.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--read-buffer", type=int, default=16 * 1024, help="picows read_buffer_init_size")
    a = ap.parse_args()
    uvloop.run(main(a.port, a.read_buffer))
