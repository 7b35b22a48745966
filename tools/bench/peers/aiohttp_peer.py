"""Peer: aiohttp WebSocketResponse (compress off) on uvloop; fan-out awaits send_str per subscriber.

Framing as in picows_peer.py ("s", "p"+DATA, "e"+DATA). Prints "PEER READY port=N"."""

import argparse
import asyncio

import uvloop
from aiohttp import WSMsgType, web

SUBS: set = set()


async def handler(request):
    ws = web.WebSocketResponse(compress=False, max_msg_size=2**20, autoping=True)
    await ws.prepare(request)
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = msg.data
            op = data[:1]
            if op == "p":
                payload = data[1:]
                for s in list(SUBS):
                    if not s.closed:
                        await s.send_str(payload)
                await ws.send_str("a")
            elif op == "e":
                await ws.send_str(data[1:])
            elif op == "s":
                SUBS.add(ws)
                await ws.send_str("s")
    finally:
        SUBS.discard(ws)
    return ws


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    print(f"PEER READY port={site._server.sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    uvloop.run(main(ap.parse_args().port))
