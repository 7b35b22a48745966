"""Peer: Python `websockets` (asyncio API) on uvloop; fan-out through websockets.broadcast().

Framing as in picows_peer.py ("s", "p"+DATA, "e"+DATA). Prints "PEER READY port=N"."""

import argparse

import uvloop
from websockets.asyncio.server import broadcast, serve

SUBS: set = set()


async def handler(ws):
    try:
        async for msg in ws:
            op = msg[:1]
            if op == "p":
                broadcast(SUBS, msg[1:])
                await ws.send("a")
            elif op == "e":
                await ws.send(msg[1:])
            elif op == "s":
                SUBS.add(ws)
                await ws.send("s")
    except Exception:
        pass
    finally:
        SUBS.discard(ws)


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**20, ping_interval=None,
                     backlog=4096) as srv:
        print(f"PEER READY port={next(iter(srv.sockets)).getsockname()[1]}", flush=True)
        await srv.serve_forever()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
