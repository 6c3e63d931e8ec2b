"""The kernel/user contract: cffi's view of maps/*.h matches the BTF clang wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from pydp.loader import Btf, object_dir
from pydp.maps import Layout, ffi, struct_names

OBJECTS = sorted(object_dir().glob("*.bpf.o"))


def test_objects_are_built() -> None:
    """make bpf produced the objects this test reads (an empty list would pass vacuously)."""
    names = {p.name for p in OBJECTS}
    assert {"endpoint.bpf.o", "floor.bpf.o"} <= names


@pytest.mark.parametrize("struct", struct_names())
def test_contract_struct_matches_btf(struct: str) -> None:
    """Size and every field's offset and size agree between cffi and each object's BTF, and
    every contract struct appears in at least one object (so none escapes the check)."""
    ctype = ffi.typeof(f"struct {struct}")
    cffi_fields = [(n, f.offset, ffi.sizeof(f.type)) for n, f in ctype.fields]
    seen_in = []
    for obj in OBJECTS:
        with Btf.from_file(obj) as btf:
            if not btf.has_struct(struct):
                continue
            size, members = btf.struct(struct)
        seen_in.append(obj.name)
        assert size == ffi.sizeof(ctype), f"{struct} in {obj.name}"
        assert [(m.name, m.offset, m.size) for m in members] == cffi_fields, obj.name
    assert seen_in, f"struct {struct} is in no compiled object's BTF"


@pytest.mark.parametrize("struct", struct_names())
def test_contract_layout_packs_c_size(struct: str) -> None:
    """The Python codec packs every contract struct to exactly its C size."""
    assert Layout(f"struct {struct}").size == ffi.sizeof(f"struct {struct}")


def test_contract_headers_have_no_packed_or_bitfields() -> None:
    """maps/*.h follow the contract rules: no packed attribute, no bitfields."""
    from pydp.maps import HEADERS

    for h in HEADERS:
        text = Path(h).read_text()
        assert "packed" not in text, h.name
        assert not any(
            ":" in line.split("/*")[0] and line.strip().startswith("__")
            for line in text.splitlines()
        ), h.name
