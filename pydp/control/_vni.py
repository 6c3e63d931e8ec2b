"""VNIs: an overlay network's VXLAN id, unique across the cluster.

A network's VNI is claimed by creating ``/vnis/VNI`` in the transaction that stores the
network, and only if that key is absent; removing the network deletes the key in the
same way. The candidate comes from a read before the transaction, so the transaction
depends on that one key only: two nodes choosing at once pick the same smallest free
VNI, one transaction creates the key, the other finds it there (`Taken`) and is tried
again with the next free VNI. On etcd, whose transactions are optimistic, the loser may
instead fail its commit (TxnConflictError: the key it read absent exists now); it is
tried again the same way, after a random pause growing with each attempt, so that nodes
creating networks at the same moment spread out.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator

from pydp.control.driver import VNI_FIRST, VNI_MAX, VXLANID_LIST
from pydp.control.model import VNIS, Network, vni_key
from pydp.errors import ConflictError
from pydp.store import Store, Txn

__all__ = ["ATTEMPTS", "Claims", "Taken", "claim", "release"]

ATTEMPTS = 16  # transactions tried before a create gives up (other nodes keep winning)
PAUSE = 0.005  # seconds: the longest pause after the first conflict, doubled after each


class Taken(ConflictError):
    """The VNI chosen is claimed already (by a node that won the race): choose again."""

    def __init__(self, vni: int) -> None:
        super().__init__(f"VNI {vni} is claimed already")
        self.vni = vni


def claim(t: Txn, vni: int, net: Network, explicit: bool) -> None:
    """Create ``/vnis/VNI`` for net, which must be absent: an explicit VNI in use is the
    user's error, a chosen one `Taken`."""
    entry = t.get(vni_key(vni))
    if entry is not None:
        if not explicit:
            raise Taken(vni)
        owner = json.loads(entry.value).get("name", "?")
        raise ConflictError(f"-o {VXLANID_LIST}: VNI {vni} is used by network {owner}")
    t.put(vni_key(vni), json.dumps({"network_id": net.id, "name": net.name}, sort_keys=True))


def release(t: Txn, vni: int) -> None:
    t.delete(vni_key(vni))


class Claims:
    """The VNIs one ``network create`` tries, one per transaction, at most `ATTEMPTS`: the
    one asked for, or the smallest free from `VNI_FIRST` as the store shows it, skipping
    those found taken."""

    def __init__(self, store: Store, wanted: int | None) -> None:
        self.store = store
        self.wanted = wanted
        self._skip: set[int] = set()
        self._conflicts = 0

    def __iter__(self) -> Iterator[int]:
        for _ in range(ATTEMPTS):
            yield self._smallest_free() if self.wanted is None else self.wanted

    def taken(self, vni: int) -> None:
        """A transaction found ``vni`` claimed: choose another."""
        self._skip.add(vni)

    def conflict(self) -> None:
        """A transaction's commit conflicted (another node wrote what it read): pause, a
        random time that doubles with each conflict, before the next."""
        time.sleep(random.uniform(0, PAUSE * 2 ** min(self._conflicts, 6)))
        self._conflicts += 1

    def _smallest_free(self) -> int:
        used = {int(e.key.removeprefix(VNIS)) for e in self.store.list(VNIS)} | self._skip
        for vni in range(VNI_FIRST, VNI_MAX + 1):
            if vni not in used:
                return vni
        raise ConflictError(f"-o {VXLANID_LIST}: every VNI from {VNI_FIRST} to {VNI_MAX} is in use")

    def exhausted(self, name: str) -> ConflictError:
        return ConflictError(
            f"network create {name}: no free VNI claimed in {ATTEMPTS} attempts (other nodes"
            " were claiming VNIs at the same time); try again"
        )
