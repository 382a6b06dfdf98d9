"""How long an event waits in the embedded broker before a consumer sees it, by the consumer's fetch wait.

Why this exists: Faust builds its aiokafka consumer with ``fetch_max_wait_ms=1500``, and the embedded broker
(Tansu) holds an empty Fetch for the whole wait even when records arrive meanwhile. A bare aiokafka consumer
(what Faust runs) reads events produced one at a time every 50 ms, for several waits.

    .venv/bin/python -m bench.fetch_wait        # writes bench/results/fetch-wait.json
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Producer

from bench.common import RESULTS, machine_info, percentiles, write_results
from stream.broker import EmbeddedBroker
from stream.topics import TopicSpec, ensure_topics

log = logging.getLogger("bench.fetch_wait")
WAITS_MS = (1500, 500, 100, 10)
EVENTS = 60


async def delays_ms(bootstrap: str, topic: str, wait_ms: int) -> list[float]:
    """Produce ``EVENTS`` timestamped messages 50 ms apart; each one's time until the consumer has it."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="latest",
                                fetch_max_wait_ms=wait_ms)
    await consumer.start()
    await asyncio.sleep(1.0)  # let the consumer settle on the end of the topic before the first event
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    seen: list[float] = []

    async def consume() -> None:
        while len(seen) < EVENTS:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            seen.extend(1000 * (now - float(m.value.decode())) for msgs in batch.values() for m in msgs)

    task = asyncio.create_task(consume())
    for i in range(EVENTS):
        producer.produce(topic, value=str(time.time()).encode(), partition=i % 4)
        producer.flush()
        await asyncio.sleep(0.05)
    await asyncio.wait_for(task, 60)
    await consumer.stop()
    return seen


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out: dict = {"machine": machine_info(), "events_per_wait": EVENTS, "delay_ms_by_fetch_max_wait_ms": {}}
    with EmbeddedBroker() as broker:
        for wait in WAITS_MS:
            topic = f"fetch-wait-{wait}-{int(time.time())}"
            ensure_topics({"bootstrap.servers": broker.bootstrap}, [TopicSpec(topic, 4)])
            delays = asyncio.run(delays_ms(broker.bootstrap, topic, wait))
            out["delay_ms_by_fetch_max_wait_ms"][str(wait)] = {**percentiles(delays), "max": round(max(delays), 2),
                                                                "mean": round(float(np.mean(delays)), 2)}
            log.info("fetch_max_wait_ms=%d: %s", wait, out["delay_ms_by_fetch_max_wait_ms"][str(wait)])
    write_results(RESULTS / "fetch-wait.json", out)


if __name__ == "__main__":
    main()
