"""The agent's wait for changes (``Agent._changes``) on a scripted store: the first change
ends the wait for the period at once, the rest of its burst is taken with short quiet
windows, and a burst that never goes quiet still lets the lease be renewed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

from pydp.agent.agent import QUIET, Agent
from pydp.store import Event


@dataclass
class ScriptedStore:
    """watch() yields the next scripted batch of revisions (one batch a call), then ends
    as a watch with no more events would; every call's (since, timeout) is recorded."""

    batches: list[list[int]]
    calls: list[tuple[int, float | None]] = field(default_factory=list)
    delay: float = 0.0  # seconds before a batch's events come

    def watch(
        self,
        prefix: str,
        since: int,
        timeout: float | None = None,
        stop: threading.Event | None = None,
    ) -> Iterator[Event]:
        self.calls.append((since, timeout))
        batch = self.batches.pop(0) if self.batches else []
        time.sleep(self.delay)
        for rev in batch:
            yield Event("put", f"{prefix}k{rev}", "v", rev)


def agent_on(store: ScriptedStore) -> Agent:
    agent = object.__new__(Agent)  # no host: _changes uses the store and stop only
    agent.host = cast(Any, type("Host", (), {"store": store})())
    agent.stop = threading.Event()
    return agent


def test_a_change_ends_the_wait_and_its_burst_is_taken_in_quiet_windows() -> None:
    store = ScriptedStore([[5], [6, 7], [8], []])
    revision, changed = agent_on(store)._changes(4, 3.0, time.monotonic() + 3.0)
    assert (revision, changed) == (8, True)
    # the period once, then QUIET windows from the last revision seen until one is empty
    assert store.calls == [(4, 3.0), (5, QUIET), (7, QUIET), (8, QUIET)]


def test_no_change_waits_one_period_and_reports_none() -> None:
    store = ScriptedStore([[]])
    assert agent_on(store)._changes(4, 3.0, time.monotonic() + 3.0) == (4, False)
    assert store.calls == [(4, 3.0)]


def test_an_endless_burst_stops_at_the_renewal_deadline() -> None:
    store = ScriptedStore([[n] for n in range(10, 1_000)], delay=0.002)  # one every 2 ms
    start = time.monotonic()
    revision, changed = agent_on(store)._changes(9, 3.0, start + 0.05)
    assert changed and revision > 10
    assert store.batches  # it returned while changes were still coming
