"""One pydp host: its state dir (the store), its pin root and its namespace prefix."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from pydp.agent.reconcile import Reconciler
from pydp.control.controller import Controller
from pydp.loader import bpffs_root, remove_root
from pydp.net import OWNER_PREFIX, NetHost, netns_delete, netns_list
from pydp.store import DEFAULT_STATE_DIR, open_store

__all__ = ["PydpHost", "netns_prefix"]

log = logging.getLogger(__name__)


def netns_prefix(state_dir: Path) -> str:
    """``pydp-`` for the default state dir; ``pydp<6 hex>-`` for any other, so that several
    pydp hosts on one machine never name a sandbox namespace alike."""
    if state_dir.resolve() == DEFAULT_STATE_DIR:
        return "pydp-"
    return f"pydp{hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:6]}-"


class PydpHost:
    """The control layer and the reconciler of the pydp host this process acts for.

    ``state_dir`` defaults to ``$PYDP_STATE_DIR`` or /var/lib/pydp, ``bpffs`` to
    ``$PYDP_BPFFS`` or /sys/fs/bpf/pydp; together they are all it takes to run
    several independent pydp hosts, each in its own network namespace.
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        bpffs: Path | None = None,
        uplink: str | None = None,
        node: str | None = None,  # this node's name (default: $PYDP_NODE, else the host name)
        store: str | None = None,  # the store's URL (default: $PYDP_STORE, else SQLite)
    ) -> None:
        self.state_dir = state_dir or Path(os.environ.get("PYDP_STATE_DIR") or DEFAULT_STATE_DIR)
        self.bpffs = bpffs or bpffs_root()
        # ``store``: an etcd URL shared by many hosts; else $PYDP_STORE, else SQLite in the
        # state dir (created either way: it also holds the applied revision and the lock)
        self.store = open_store(store, state_dir=self.state_dir)
        self.netns_prefix = netns_prefix(self.state_dir)
        self.reconciler = Reconciler(self.store, self.netns_prefix, self.bpffs, uplink, node)
        self.controller = Controller(
            self.store, self.netns_prefix, self.reconciler.check_network, node=node
        )

    def apply(self) -> None:
        """Converge the kernel to the store (every CLI change ends with this); one process
        at a time, and the store revision applied is noted for `repair`."""
        with self._lock():
            revision = self.store.revision()
            self.reconciler.run()
            self._applied_file.write_text(f"{revision}\n")

    def repair(self) -> bool:
        """Reconcile if the store changed since the last complete apply (a command was
        killed halfway, or another process changed the store): True if it did."""
        try:
            applied = int(self._applied_file.read_text())
        except (OSError, ValueError):
            applied = 0  # never applied: a fresh host has nothing to repair
        if applied == self.store.revision():
            return False
        log.info(
            "store at revision %d, kernel applied %d: reconciling", self.store.revision(), applied
        )
        self.apply()
        return True

    @property
    def _applied_file(self) -> Path:
        return self.state_dir / "applied"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.state_dir / "reconcile.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def reset(self) -> None:
        """``system reset``: remove every namespace, link and pin of this host, and its state."""
        for name in netns_list(self.netns_prefix):
            netns_delete(name)
        with NetHost() as host:
            for prefix in (f"{OWNER_PREFIX}ep/", f"{OWNER_PREFIX}net/", f"{OWNER_PREFIX}vxlan"):
                for link in host.owned_links(prefix):
                    host.delete_link(link.name)
        self.reconciler.close()
        remove_root(self.bpffs)
        self.store.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        log.info("reset pydp host (state %s, pins %s)", self.state_dir, self.bpffs)

    def close(self) -> None:
        self.reconciler.close()
        self.store.close()

    def __enter__(self) -> PydpHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
