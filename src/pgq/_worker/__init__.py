"""The worker, as parts with one job each (docs/architecture.md): `worker` (options and a run's
lifecycle), `claimer` (which queues, how many), `executor` (task threads), `results` (writing
outcomes, feeding circuits), `events` (what happened to jobs), `maintenance/` (periodic duties),
`listener`, `slots`, `policies`, `inline` (the in-memory backend's synchronous driver)."""

from __future__ import annotations

from pgq._worker.worker import Worker

__all__ = ["Worker"]
