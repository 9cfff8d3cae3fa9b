"""A stand-in model server for routing tests: each port answers as one variant.

Run as `python upstream.py NAME[:MODE] ...`; it binds one loopback port per name, prints
`{"name": port, ...}` as one JSON line, and serves until killed. MODE `echo` (the default)
answers 200 with the variant's name in the body, the x-kubeserve-variant header and the
request target it received, as sent, in x-stand-in-target; `hang`
accepts connections and never answers (a hung shadow); `drop-on-reuse` answers the first
request of each connection and drops the connection at the second (a kept-alive connection
being closed). `GET /_counts` on any port gives how many requests each variant saw, how many
of them were mirror copies (`NAME/mirror`) and how many were dropped (`NAME/dropped`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections import Counter

COUNTS: Counter[str] = Counter()
STICKY: dict[str, set[str]] = {}


async def _serve(
    name: str, mode: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    served_here = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if mode == "hang":
                await asyncio.sleep(3600)
            lines = head.decode("latin-1").split("\r\n")
            _method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            served_here += 1
            if mode == "drop-on-reuse" and served_here > 1:
                # A kept-alive connection that the server closes as the next request arrives
                # (its idle timeout, or a pod going away): read it, close without an answer.
                COUNTS[f"{name}/dropped"] += 1
                break
            if target == "/_counts":
                body = json.dumps(dict(COUNTS)).encode()
            else:
                mirrored = headers.get("x-kubeserve-mirror") == "1"
                COUNTS[f"{name}{'/mirror' if mirrored else ''}"] += 1
                body = name.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                + b"x-kubeserve-variant: upstream-"
                + name.encode()
                + b"\r\n"
                # The request line is latin-1 without CR or LF: safe to echo as a header.
                + b"x-stand-in-target: "
                + target.encode("latin-1")
                + b"\r\n"
                + b"content-length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def main(specs: list[str]) -> None:
    ports = {}
    servers = []
    for item in specs:
        name, _, mode = item.partition(":")
        server = await asyncio.start_server(
            functools.partial(_serve, name, mode or "echo"), "127.0.0.1", 0, backlog=1024
        )
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
