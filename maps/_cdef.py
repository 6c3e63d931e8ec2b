"""The kernel/user contract as cffi sees it: maps/*.h fed to ``cffi.FFI().cdef``."""

from __future__ import annotations

import re
from pathlib import Path

import cffi

__all__ = ["HEADERS", "constants", "ffi", "header_text", "struct_names", "wire_fields"]

HERE = Path(__file__).resolve().parent
HEADERS: tuple[Path, ...] = tuple(sorted(HERE.glob("*.h")))

# The kernel's fixed-width types, which clang gets from <linux/types.h>.
_PRELUDE = """
typedef uint8_t __u8; typedef uint16_t __u16; typedef uint32_t __u32; typedef uint64_t __u64;
typedef int8_t __s8; typedef int16_t __s16; typedef int32_t __s32; typedef int64_t __s64;
typedef uint16_t __be16; typedef uint32_t __be32; typedef uint64_t __be64;
typedef uint16_t __sum16;
"""

_COMMENT = re.compile(r"/\*.*?\*/", re.S)  # C comments (a #define's may span lines)
_DEFINE_INT = re.compile(r"^#define\s+([A-Z_][A-Z0-9_]*)\s+(0x[0-9a-fA-F]+|\d+)\b")


def header_text(path: Path) -> str:
    """A header as cdef accepts it: integer ``#define``s kept, other directives dropped."""
    out = []
    text = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            m = _DEFINE_INT.match(stripped)
            if m:
                out.append(f"#define {m.group(1)} {m.group(2)}")
            continue
        out.append(line)
    return "\n".join(out)


def _build() -> cffi.FFI:
    ffi = cffi.FFI()
    ffi.cdef(_PRELUDE + "\n".join(header_text(h) for h in HEADERS))
    return ffi


ffi = _build()


_STRUCT = re.compile(r"struct\s+(\w+)\s*\{(.*?)\};", re.S)
_WIRE_FIELD = re.compile(r"\b__be(16|32|64)\s+(\w+)\s*;")


def constants() -> dict[str, int]:
    """Every integer ``#define`` of the contract, by name."""
    found: dict[str, int] = {}
    for path in HEADERS:
        for line in path.read_text().splitlines():
            m = _DEFINE_INT.match(line.strip())
            if m:
                found[m.group(1)] = int(m.group(2), 0)
    return found


def wire_fields() -> dict[str, frozenset[str]]:
    """For each contract struct, the fields declared ``__be*`` (network byte order)."""
    found: dict[str, frozenset[str]] = {}
    for path in HEADERS:
        for name, body in _STRUCT.findall(path.read_text()):
            found[name] = frozenset(f for _, f in _WIRE_FIELD.findall(body))
    return found


def struct_names() -> tuple[str, ...]:
    """Every struct the contract declares, in header order."""
    return tuple(name for path in HEADERS for name, _ in _STRUCT.findall(path.read_text()))
