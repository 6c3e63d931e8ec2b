"""A dict-backed RawMap: the typed views' behaviour without a kernel."""

from __future__ import annotations

from pydp.maps import BPF_EXIST, BPF_NOEXIST


class DictMap:
    """Bytes in, bytes out, like pydp.loader.Map, over a dict (insertion ordered)."""

    def __init__(
        self,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int = 16,
        percpu: bool = False,
        ncpus: int = 1,
    ) -> None:
        self.name, self.key_size, self.value_size = name, key_size, value_size
        self.max_entries, self.percpu, self.ncpus = max_entries, percpu, ncpus
        self.data: dict[bytes, bytes] = {}

    def lookup(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        assert len(key) == self.key_size and len(value) == self.value_size
        if flags == BPF_NOEXIST and key in self.data:
            raise FileExistsError(key)
        if flags == BPF_EXIST and key not in self.data:
            raise KeyError(key)
        self.data[key] = value

    def delete(self, key: bytes) -> bool:
        return self.data.pop(key, None) is not None

    def next_key(self, key: bytes | None) -> bytes | None:
        keys = list(self.data)
        if key is None or key not in self.data:
            return keys[0] if keys else None
        i = keys.index(key)
        return keys[i + 1] if i + 1 < len(keys) else None

    def lookup_all(self) -> list[tuple[bytes, bytes]]:
        return list(self.data.items())

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        ks, vs = self.key_size, self.value_size
        for i in range(count):
            self.update(keys[i * ks : (i + 1) * ks], values[i * vs : (i + 1) * vs], flags)

    def delete_batch(self, keys: bytes, count: int) -> None:
        for i in range(count):
            self.delete(keys[i * self.key_size : (i + 1) * self.key_size])
