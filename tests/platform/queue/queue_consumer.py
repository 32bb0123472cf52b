"""A worker process for the cross-process test: consume a topic, print each message's ``n`` once acked.

    python queue_consumer.py <database url> <topic>

Prints ``ready`` once connected; SIGTERM closes the queue, which ends the loop (exit 0).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from ofsre.platform.queue import QueueConfig, open_queue


async def main(url: str, topic: str) -> None:
    queue = await open_queue(QueueConfig(database_url=url, batch_size=2, poll_min_seconds=0.005,
                                         poll_max_seconds=0.05), registry=None)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM,
                                                  lambda: asyncio.ensure_future(queue.close()))
    print("ready", flush=True)
    async for msg in queue.subscribe(topic):
        await asyncio.sleep(0.002)  # some work, so the two processes interleave
        await msg.ack()
        print(msg.body["n"], flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
