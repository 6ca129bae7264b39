"""``python -m bench._old_client_worker ...``: an ingest worker on the COMPARISON BASELINE
client (:mod:`bench._old_mqtt_client`), for ``script/bench ingest`` only.

It is ``gridclear-cloud ingest`` with the same worker, the same settings and the same
timed garbage collection, but receiving through the old home-made client instead of
paho-mqtt, so that the benchmark measures what the library costs. Options: those of
the benchmark's workers (``--database-url``, ``--mqtt-url``, ``--group``,
``--client-id``, ``--topic-prefix``).
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import threading

from bench._old_mqtt_client import OldClientSource, SubscriberOptions
from gridclear.cloud.ingest.worker import IngestWorker, WorkerConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--database-url", "--mqtt-url", "--group", "--client-id", "--topic-prefix"):
        parser.add_argument(name, required=True)
    args = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = WorkerConfig(
        database_url=args.database_url,
        mqtt_url=args.mqtt_url,
        client_id=args.client_id,
        group=args.group,
        topic_prefix=args.topic_prefix,
        interval_refresh_s=0,
    )
    host, port = args.mqtt_url.removeprefix("mqtt://").rsplit(":", 1)
    readings = f"$share/{config.group}/{config.topic_prefix}gridclear/v1/devices/+/readings"
    status = f"{config.topic_prefix}gridclear/v1/devices/+/status"
    source = OldClientSource(
        SubscriberOptions(
            host=host,
            port=int(port),
            client_id=config.client_id,
            filters=(readings, status),
            receive_maximum=config.receive_maximum,
            # The session ends with the connection: a baseline worker that stopped must not
            # leave a session queueing the next run's messages (the product's workers leave).
            session_expiry_s=0,
        )
    )
    worker = IngestWorker(config, source=source)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # As gridclear-cloud ingest does (its --gc-interval-s, 10 s by default).
    gc.collect()
    gc.freeze()
    gc.disable()

    def collect() -> None:
        while not stop.wait(10):
            gc.collect()

    threading.Thread(target=collect, daemon=True).start()
    worker.run(stop)


if __name__ == "__main__":
    main()
