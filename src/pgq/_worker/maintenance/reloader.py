"""The config reloader: a changed `pgq.toml` is read again each second. Live settings
(max_attempts, backoff, rate, retention, paused) are written at once; a change that only a
restart applies is reported (`pgq queues` shows "restart required") and not applied; a file that
does not validate changes nothing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pgq._backends.ports import Backend
from pgq._core.errors import ConfigError
from pgq._core.policy import Queue, live_update, load_config, merge_queues, restart_required
from pgq._worker.events import ConfigRefused, ConfigReloaded, Hooks
from pgq._worker.policies import QueuePolicies


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


class Reloader:
    name = "config reload"
    first_s = 0.0

    def __init__(
        self,
        backend: Backend,
        policies: QueuePolicies,
        hooks: Hooks,
        *,
        path: Path,
        declared: Sequence[str | Queue] | None,
        loaded_mtime: float | None,
        worker_id: str,
        every_s: float = 1.0,
    ) -> None:
        self._backend = backend
        self._policies = policies
        self._hooks = hooks
        self._path = path
        self._declared = declared
        self._mtime = loaded_mtime
        self._worker_id = worker_id
        self.every_s = every_s

    def run(self, now: float) -> None:
        path = self._path
        current = mtime(path)
        if current == self._mtime:
            return
        self._mtime = current
        try:
            _, fresh = merge_queues(self._declared, load_config(path))
        except ConfigError as exc:
            self._hooks.emit(ConfigRefused(self._worker_id, str(path), str(exc)))
            return
        old = self._policies.own
        changes = restart_required(old, fresh)
        live: dict[str, Queue] = {}
        for name in old.keys() & fresh.keys():
            updated = live_update(old[name], fresh[name])
            if updated != old[name]:
                live[name] = updated
        # `paused` is written only when the file changed it, so that a reload does not undo a
        # `pgq queues pause/resume` the file says nothing new about.
        written = [
            p if p.paused != old[p.name].paused else dataclasses.replace(p, paused=None)
            for p in live.values()
        ]
        try:
            if live:
                self._backend.write_policies(written, worker_id=self._worker_id, live_only=True)
                self._policies.own = {**old, **live}
            self._hooks.emit(ConfigReloaded(self._worker_id, str(path), sorted(live), changes))
            self._backend.report_restart_required(self._worker_id, changes)
        except BaseException:
            self._mtime = None  # read the file again at the next check
            raise
