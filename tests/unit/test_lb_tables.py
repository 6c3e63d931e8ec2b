"""LbTables' slot pool, on fake maps: spares by size class, quarantine until a grace
period (an outer-map write), trimming, and what is read back at start."""

from __future__ import annotations

import errno
from typing import ClassVar

import pytest

from pydp.errors import DatapathError
from pydp.maps import lb
from pydp.maps.lb import STAMP_SLOT, LbTables, capacity


class FakeInner:
    maps: ClassVar[dict[int, FakeInner]] = {}
    next_id = 100

    def __init__(self, max_entries: int, flags: int) -> None:
        FakeInner.next_id += 1
        self.id = self.fd = FakeInner.next_id
        self.max_entries = max_entries
        self.flags = flags
        self.data = bytearray(8 * max_entries)
        FakeInner.maps[self.id] = self

    def lookup(self, key: bytes) -> bytes | None:
        i = int.from_bytes(key, "little")
        return bytes(self.data[8 * i : 8 * i + 8])

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        for j in range(count):
            i = int.from_bytes(keys[4 * j : 4 * j + 4], "little")
            self.data[8 * i : 8 * i + 8] = values[8 * j : 8 * j + 8]

    def lookup_all(self) -> list[tuple[bytes, bytes]]:
        return [(i.to_bytes(4, "little"), self.lookup(i.to_bytes(4, "little")) or b"")
                for i in range(self.max_entries)]  # fmt: skip

    def close(self) -> None:
        pass


class FakeOuter:
    """An array of maps: graces counts its writes (each waits for a grace period)."""

    def __init__(self, max_entries: int = 64) -> None:
        self.fd = 3
        self.max_entries = max_entries
        self.slots: dict[int, int] = {}
        self.graces = 0
        self.reject_flags = 0  # inner maps with these flags are refused (EINVAL)

    def lookup(self, key: bytes) -> bytes | None:
        v = self.slots.get(int.from_bytes(key, "little"))
        return None if v is None else v.to_bytes(4, "little")

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self.update_batch(key, value, 1)

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        for j in range(count):
            fd = int.from_bytes(values[4 * j : 4 * j + 4], "little")
            if FakeInner.maps[fd].flags & self.reject_flags:
                raise DatapathError("update: Invalid argument", errno.EINVAL)
            self.slots[int.from_bytes(keys[4 * j : 4 * j + 4], "little")] = fd
        self.graces += 1

    def delete(self, key: bytes) -> bool:
        self.graces += 1
        return self.slots.pop(int.from_bytes(key, "little"), None) is not None

    def delete_batch(self, keys: bytes, count: int) -> None:
        for j in range(count):
            self.slots.pop(int.from_bytes(keys[4 * j : 4 * j + 4], "little"), None)
        self.graces += 1

    def lookup_all(self) -> list[tuple[bytes, bytes]]:
        return [(k.to_bytes(4, "little"), v.to_bytes(4, "little")) for k, v in self.slots.items()]


def create(map_type: int, name: str, key_size: int, value_size: int, n: int, flags: int = 0):  # type: ignore[no-untyped-def]
    return FakeInner(n, flags)


def by_id(map_id: int) -> FakeInner:
    return FakeInner.maps[map_id]


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> tuple[LbTables, FakeOuter]:
    monkeypatch.setattr(lb, "RESERVE", 2)
    monkeypatch.setattr(lb, "_map_flags", lambda map_id, _: FakeInner.maps[map_id].flags)
    outer = FakeOuter()
    t = LbTables(outer, create, by_id)  # type: ignore[arg-type]
    t.mmapable = False  # fakes are not mmap-able: batch writes
    t.load(())
    return t, outer


def table(n: int, fill: int = 1) -> bytes:
    return bytes([fill]) * 8 * n


def content(outer: FakeOuter, slot: int) -> bytes:
    return bytes(FakeInner.maps[outer.slots[slot]].data)


def test_capacity_classes() -> None:
    """Powers of two from 16: a Maglev prime and a few draining slots share a class."""
    assert [capacity(n) for n in (1, 16, 17, 251, 1021, 1024, 1025, 131071)] == [
        16, 16, 32, 256, 1024, 1024, 2048, 131072,
    ]  # fmt: skip


def test_new_tables_come_with_spares_of_their_class_in_one_write(
    tables: tuple[LbTables, FakeOuter],
) -> None:
    t, outer = tables
    slots = t.place([table(1021), table(251)])
    assert outer.graces == 1, "one outer write for the tables, their spares and the stamp"
    assert STAMP_SLOT in outer.slots and STAMP_SLOT not in slots
    assert content(outer, slots[0])[: 8 * 1021] == table(1021)
    assert sorted(len(v) for v in t.spare.values()) == [2, 2]
    assert set(t.spare) == {1024, 256}
    assert not set(slots) & {s for v in t.spare.values() for s in v}


def test_a_change_takes_a_spare_without_an_outer_write(
    tables: tuple[LbTables, FakeOuter],
) -> None:
    t, outer = tables
    (old,) = t.place([table(1021, 1)])
    graces = outer.graces
    spare = list(t.spare[1024])
    (new,) = t.place([table(1000, 2)])
    assert outer.graces == graces, "a spare is written in place"
    assert new in spare and new != old
    data = content(outer, new)
    assert data[: 8 * 1000] == table(1000, 2) and data[8 * 1000 :] == bytes(8 * 24), "tail zeroed"


def test_a_released_slot_is_quarantined_until_a_grace_period(
    tables: tuple[LbTables, FakeOuter],
) -> None:
    """The old table is never handed out while a packet may read it: not before the next
    outer-map write."""
    t, outer = tables
    (old,) = t.place([table(1021)])
    (new,) = t.place([table(1021, 2)])
    t.release([old])
    assert old in t.quarantine
    got = t.place([table(1021, 3)])  # the last spare of the class
    assert old not in got
    got2 = t.place([table(1021, 4)])  # none left: new arrays, one grace period
    assert old not in got2
    assert old not in t.quarantine and old in t.spare[1024], "graced by that write"
    assert content(outer, new)[:8] == table(1, 2), "a referenced slot is never written"


def test_reclaim_waits_one_grace_period(tables: tuple[LbTables, FakeOuter]) -> None:
    t, outer = tables
    (old,) = t.place([table(100)])
    t.release([old])
    graces = outer.graces
    assert t.reclaim() == 1
    assert outer.graces == graces + 1 and old in t.spare[128]
    assert t.reclaim() == 0 and outer.graces == graces + 1


def test_many_released_slots_are_deleted(
    tables: tuple[LbTables, FakeOuter], monkeypatch: pytest.MonkeyPatch
) -> None:
    t, outer = tables
    monkeypatch.setattr(lb, "TRIM_AT", 3)
    slots = t.place([table(20)] * 4)
    t.release(slots)
    assert not t.quarantine and not set(slots) & set(outer.slots)
    assert sorted(t.place([table(20)] * 2 + [table(300)] * 3))[:2] != [], "slots reused"


def test_load_quarantines_slots_no_frontend_names(tables: tuple[LbTables, FakeOuter]) -> None:
    """A new process cannot know when the last one released its tables: those unreferenced
    wait for a grace period too; referenced ones are never handed out."""
    t, outer = tables
    a, b = t.place([table(1021), table(1021)])
    t2 = LbTables(outer, create, by_id)  # type: ignore[arg-type]
    t2.load({a})
    assert b in t2.quarantine and a not in t2.quarantine and not t2.spare
    assert t2.mmapable is False
    got = t2.place([table(1021)] * 4)
    assert a not in got
    assert b in t2.spare[1024] or b in got


def test_the_stamp_is_kept_in_slot_0(tables: tuple[LbTables, FakeOuter]) -> None:
    t, _ = tables
    assert t.read_stamp() is None
    t.write_stamp(b"0123456789abcdef")
    assert t.read_stamp() == b"0123456789abcdef"


def test_an_mmap_template_is_found_by_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no table yet, inner arrays are first made BPF_F_MMAPABLE; an outer map whose
    template is not refuses them (EINVAL) and they are made again without."""
    outer = FakeOuter()
    outer.reject_flags = 1 << 10
    t = LbTables(outer, create, by_id)  # type: ignore[arg-type]
    t.load(())
    assert t.mmapable is None
    monkeypatch.setattr(LbTables, "_write", lambda self, inner, cap, data, fresh: None)
    t.place([b""] * 0 + [table(16)])
    assert t.mmapable is False
    assert all(FakeInner.maps[fd].flags == 1 << 12 for fd in outer.slots.values())
