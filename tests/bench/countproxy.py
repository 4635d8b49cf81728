#!/usr/bin/env python3
"""A byte-counting TCP proxy for the benchmarks (not part of `cargo test`).

    countproxy.py LISTEN_PORT TARGET_HOST TARGET_PORT COUNTS_FILE

Listens on 127.0.0.1:LISTEN_PORT, forwards every connection to the target,
and after each connection closes rewrites COUNTS_FILE with two numbers:
the bytes forwarded client to server and server to client, over all
connections so far. Stops on SIGTERM.
"""

import asyncio
import signal
import sys

up = 0
down = 0


async def pipe(reader, writer, direction):
    global up, down
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            if direction == "up":
                up += len(data)
            else:
                down += len(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass


async def handle(client_r, client_w, host, port, counts):
    try:
        server_r, server_w = await asyncio.open_connection(host, port)
    except OSError:
        client_w.close()
        return
    await asyncio.gather(
        pipe(client_r, server_w, "up"), pipe(server_r, client_w, "down")
    )
    for w in (client_w, server_w):
        w.close()
    with open(counts, "w") as f:
        f.write(f"{up} {down}\n")


async def main():
    listen, host, port, counts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    with open(counts, "w") as f:
        f.write("0 0\n")
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, host, port, counts), "127.0.0.1", int(listen)
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
