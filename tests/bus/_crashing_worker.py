"""A worker process that takes one message and never finishes it, so a test can kill it mid-work.

    python _crashing_worker.py <url> <durable> <subject> <ack_wait>

Prints `READY <seq> <attempt>` once its handler holds a message, then blocks until killed.
"""

from __future__ import annotations

import asyncio
import sys

import bus


async def main(url: str, durable: str, subject: str, ack_wait: float) -> None:
    async def hold(delivery: bus.Delivery) -> None:
        print(f"READY {delivery.seq} {delivery.attempt}", flush=True)
        await asyncio.Event().wait()

    settings = bus.Settings(url=url)
    async with bus.connect(settings, name="crashing-worker") as conn:
        queue = bus.Queue(durable=durable, subject=subject, ack_wait=ack_wait)
        await bus.Worker(conn.js, settings.stream, queue, hold, concurrency=1).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
