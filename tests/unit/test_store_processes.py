"""pydp.store across processes: live watch, concurrent writers, a locked file, a killed writer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pydp.errors import ConflictError
from pydp.store import Entry, Event, SQLiteStore

PUT_LATER = """
import sys, time
from pathlib import Path
from pydp.store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
time.sleep(0.3)
store.put("/networks/c", "3")
print(time.time(), flush=True)
"""

INCREMENT = """
import sys
from pathlib import Path
from pydp.errors import ConflictError
from pydp.store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
for _ in range(int(sys.argv[3])):
    if sys.argv[2] == "txn":
        with store.transaction() as txn:
            entry = txn.get("/counter")
            txn.put("/counter", str(int(entry.value) + 1 if entry else 1))
        continue
    while True:
        entry = store.get("/counter")
        try:
            store.put("/counter", str(int(entry.value) + 1 if entry else 1),
                      expect=entry.revision if entry else 0)
            break
        except ConflictError:
            pass
"""

HOLD_TRANSACTION = """
import sys, time
from pathlib import Path
from pydp.store import SQLiteStore
store = SQLiteStore(Path(sys.argv[1]))
with store.transaction() as txn:
    for i in range(100):
        txn.put(f"/crash/{i}", "x")
    txn.delete("/keep")
    print("inside", flush=True)
    time.sleep(60)
"""


def child(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True
    )


def test_watch_sees_another_process_put_within_100ms(tmp_path: Path) -> None:
    """A watch replays history, then yields a put made by another process within ~100 ms."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.put("/networks/a", "1")
    store.put("/endpoints/a", "2")
    events = store.watch("/networks/", since=0, timeout=10)
    assert next(events) == Event("put", "/networks/a", "1", 1)
    proc = child(PUT_LATER, str(path))
    try:
        assert next(events) == Event("put", "/networks/c", "3", 3)
        seen = time.time()
        out, _ = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert seen - float(out) < 0.1


@pytest.mark.parametrize("mode", ["txn", "cas"])
def test_store_concurrent_writers_lose_no_update(tmp_path: Path, mode: str) -> None:
    """Two processes incrementing one counter (transactions, or CAS with retry) lose nothing."""
    path, n = tmp_path / "s.db", 150
    procs = [child(INCREMENT, str(path), mode, str(n)) for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    store = SQLiteStore(path)
    counter = store.get("/counter")
    assert counter is not None and counter.value == str(2 * n)
    assert counter.revision == store.revision() == 2 * n  # each increment: one revision


@pytest.fixture
def holder(tmp_path: Path) -> subprocess.Popen[str]:
    """A child process inside a transaction on tmp_path/s.db, which holds "/keep" at revision 1."""
    SQLiteStore(tmp_path / "s.db").put("/keep", "1")
    proc = child(HOLD_TRANSACTION, str(tmp_path / "s.db"))
    assert proc.stdout is not None and proc.stdout.readline() == "inside\n"
    return proc


def test_store_killed_inside_transaction_leaves_db_intact(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """SIGKILL in the middle of a transaction leaves the file as it was before it."""
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL
    store = SQLiteStore(tmp_path / "s.db")
    assert store.revision() == 1
    assert store.list("/") == [Entry("/keep", "1", 1, 1)]
    assert store.put("/after", "1") == 2


def test_store_writer_waits_then_reports_a_lock(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    """A writer blocked by another process's transaction fails with ConflictError after
    busy_timeout; readers are not blocked."""
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=0.2)
    try:
        assert store.get("/keep") == Entry("/keep", "1", 1, 1)
        start = time.monotonic()
        with pytest.raises(ConflictError) as e:
            store.put("/x", "1")
        assert time.monotonic() - start >= 0.2
        assert str(e.value) == (
            f"put /x: store {tmp_path / 's.db'} is locked by another process for more than 0.2 s"
        )
    finally:
        holder.kill()
        holder.wait()


OPEN_AND_PUT = """
import sys
from pathlib import Path
from pydp.store import SQLiteStore
SQLiteStore(Path(sys.argv[1])).put("/nodes/" + sys.argv[2], "{}")
"""


def test_store_first_open_by_many_processes_at_once(tmp_path: Path) -> None:
    """Processes that create the same new file at once all open it and all their puts land."""
    path = tmp_path / "s.db"
    procs = [child(OPEN_AND_PUT, str(path), str(i)) for i in range(6)]
    assert [proc.wait(timeout=60) for proc in procs] == [0] * 6
    store = SQLiteStore(path)
    assert store.revision() == 6 and len(store.list("/nodes/")) == 6
