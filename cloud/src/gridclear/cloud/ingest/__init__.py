"""Ingest: signed readings from MQTT into PostgreSQL, verified, deduplicated, never lost.

- :mod:`~gridclear.cloud.ingest.verify`: what a message is (pure);
- :mod:`~gridclear.cloud.ingest.writer`: a batch in one transaction (COPY + INSERT);
- :mod:`~gridclear.cloud.ingest.worker`: the MQTT side, acknowledging after commit;
- :mod:`~gridclear.cloud.ingest.keys`, :mod:`~gridclear.cloud.ingest.metrics`.

See docs/INGEST.md for running it.
"""

from gridclear.cloud.ingest.metrics import IngestMetrics
from gridclear.cloud.ingest.verify import (
    Accepted,
    IngestReason,
    KeyRecord,
    Rejected,
    StatusUpdate,
    classify,
)
from gridclear.cloud.ingest.worker import IngestWorker, WorkerConfig, default_client_id
from gridclear.cloud.ingest.writer import BatchWriter, WriteResult

__all__ = [
    "Accepted",
    "BatchWriter",
    "IngestMetrics",
    "IngestReason",
    "IngestWorker",
    "KeyRecord",
    "Rejected",
    "StatusUpdate",
    "WorkerConfig",
    "WriteResult",
    "classify",
    "default_client_id",
]
