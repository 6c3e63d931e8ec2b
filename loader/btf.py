"""Read types from BTF (a compiled object's or a loaded object's) through libbpf."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydp.errors import DatapathError, NotFoundError
from pydp.loader._libbpf import ffi, lib

__all__ = ["BTF_KIND_DATASEC", "BTF_KIND_STRUCT", "Btf", "DatasecVar", "Member"]

BTF_KIND_STRUCT = 4
BTF_KIND_DATASEC = 15


@dataclass(frozen=True, slots=True)
class Member:
    """A struct member as BTF records it."""

    name: str
    offset: int  # bytes from the start of the struct
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class DatasecVar:
    """A global variable in a data section (.rodata, .data, .bss)."""

    name: str
    offset: int
    size: int


class Btf:
    """A parsed BTF blob; a view over libbpf's ``struct btf``."""

    def __init__(self, handle: Any, owned: bool) -> None:
        self._btf = handle
        self._owned = owned

    @classmethod
    def from_file(cls, path: Path) -> Btf:
        """Parse the .BTF section of an ELF object."""
        handle = lib.btf__parse(str(path).encode(), ffi.NULL)
        if handle == ffi.NULL:
            raise DatapathError.from_errno(f"parse BTF of {path}", ffi.errno or 22)
        return cls(handle, owned=True)

    def close(self) -> None:
        if self._owned and self._btf != ffi.NULL:
            lib.btf__free(self._btf)
        self._btf = ffi.NULL

    def __enter__(self) -> Btf:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _find(self, name: str, kind: int) -> Any:
        tid = lib.btf__find_by_name_kind(self._btf, name.encode(), kind)
        if tid < 0:
            raise NotFoundError(f"BTF: no type {name!r} of kind {kind}", -tid)
        return tid, lib.btf__type_by_id(self._btf, tid)

    def _name(self, off: int) -> str:
        return str(ffi.string(lib.btf__name_by_offset(self._btf, off)).decode())

    def has_struct(self, name: str) -> bool:
        return bool(lib.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_STRUCT) >= 0)

    def struct(self, name: str) -> tuple[int, list[Member]]:
        """(size, members) of ``struct name``; bitfields are refused."""
        _, t = self._find(name, BTF_KIND_STRUCT)
        vlen, kflag = t.info & 0xFFFF, t.info >> 31
        members = ffi.cast("const struct btf_member *", t + 1)
        out = []
        for i in range(vlen):
            m = members[i]
            bits = m.offset & 0xFFFFFF if kflag else m.offset
            if kflag and m.offset >> 24:
                raise DatapathError(f"BTF: struct {name} has a bitfield")
            out.append(
                Member(self._name(m.name_off), bits // 8, lib.btf__resolve_size(self._btf, m.type))
            )
        return int(t.size_or_type), out

    def datasec(self, name: str) -> list[DatasecVar]:
        """The variables of a data section such as ``.rodata``."""
        _, t = self._find(name, BTF_KIND_DATASEC)
        infos = ffi.cast("const struct btf_var_secinfo *", t + 1)
        out = []
        for i in range(t.info & 0xFFFF):
            var = lib.btf__type_by_id(self._btf, infos[i].type)
            out.append(DatasecVar(self._name(var.name_off), infos[i].offset, infos[i].size))
        return out
