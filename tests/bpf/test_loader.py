"""pydp.loader against the real kernel: load, verifier errors, pins, attach, test_run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.errors import AttachError, DatapathError, MapFullError, NotFoundError, VerifierError
from pydp.loader import (
    BpfObject,
    Map,
    SharedObject,
    attach_tc,
    attach_xdp,
    detach_tc,
    detach_xdp,
    is_bpffs,
    tc_attached,
    test_run,
    xdp_attached,
)
from pydp.testing import Host, Topology

BAD = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc")
int reads_past_end(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	return data[64]; /* no bounds check: the verifier must refuse this */
}
char LICENSE[] SEC("license") = "GPL";
"""

SMALL = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 2);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} small_hash SEC(".maps");
const volatile __u32 ANSWER = 1;
SEC("xdp")
int answer(struct xdp_md *ctx)
{
	return ANSWER;
}
char LICENSE[] SEC("license") = "GPL";
"""


def compile_bpf(src: str, out: Path) -> Path:
    """Compile a test-only program (pydp itself never compiles at run time)."""
    c = out.with_suffix(".c")
    c.write_text(src)
    arch = f"/usr/include/{os.uname().machine}-linux-gnu"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", "-idirafter", arch, "-c", str(c), "-o", str(out)],
        check=True,
    )
    return out


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Module scope: the test-only objects, compiled into a temporary folder."""
    d = tmp_path_factory.mktemp("bpf")
    return {"bad": compile_bpf(BAD, d / "bad.o"), "small": compile_bpf(SMALL, d / "small.o")}


@pytest.fixture
def host(topology: Topology) -> Iterator[Host]:
    """Function scope, depends on topology: a host netns with a veth pair (pdv0, pdv1) up."""
    h = topology.add_host("h")
    h.ip_batch(["link add pdv0 type veth peer name pdv1", "link set pdv0 up", "link set pdv1 up"])
    yield h


def test_load_verifier_error_names_program_and_log(objs: dict[str, Path], bpffs: Path) -> None:
    """A program the verifier refuses raises VerifierError with its name and the log's tail."""
    with BpfObject(objs["bad"]) as obj, pytest.raises(VerifierError) as e:
        obj.load()
    assert e.value.program == "reads_past_end"
    assert str(e.value).startswith("load program reads_past_end from bad.o: verifier rejected")
    assert "invalid access to packet" in e.value.log
    assert "invalid access to packet" in str(e.value)


def test_open_missing_object_says_make_bpf(tmp_path: Path) -> None:
    """Opening an object that is not built says how to build it."""
    with pytest.raises(DatapathError, match=r"^open BPF object .*nope\.o: run `make bpf`$"):
        BpfObject(tmp_path / "nope.o")


def test_rodata_set_before_load(objs: dict[str, Path], bpffs: Path) -> None:
    """A load-time constant changes what the program returns; unknown names and writes after
    load are refused."""
    with BpfObject(objs["small"]) as obj:
        with pytest.raises(NotFoundError, match="no load-time constant NOPE"):
            obj.set_rodata("NOPE", 1)
        obj.set_rodata("ANSWER", 2)  # XDP_PASS
        obj.load()
        assert test_run(obj.program("answer"), b"\0" * 64).verdict == 2
        with pytest.raises(DatapathError, match="the object is loaded already"):
            obj.set_rodata("ANSWER", 1)


def test_pinned_map_survives_reload(objs: dict[str, Path], bpffs: Path) -> None:
    """Maps pinned by name are reused by the next load, contents included."""
    root = bpffs / "reload"
    with BpfObject(objs["small"], pin_root=root) as obj:
        obj.load()
        obj.map("small_hash").update(b"\1\0\0\0", b"\x2a" + b"\0" * 7)
    assert is_bpffs(root) and (root / "small_hash").exists()
    with BpfObject(objs["small"], pin_root=root) as obj:
        obj.load()
        assert obj.map("small_hash").lookup(b"\1\0\0\0") == b"\x2a" + b"\0" * 7
    with Map.open_pinned("small_hash", root) as m:
        assert m.max_entries == 2 and m.key_size == 4 and m.value_size == 8
    with pytest.raises(NotFoundError, match=r"open pinned map .*/absent: No such file"):
        Map.open_pinned("absent", root)


def test_shared_object_loads_once_per_root_and_build(objs: dict[str, Path], bpffs: Path) -> None:
    """The first SharedObject loads and pins the program; the next, same build and settings,
    opens the pin (the same program, its maps from their pins); other settings or another
    build load anew and unpin the older; another root loads its own."""
    root = bpffs / "shared"
    first = SharedObject(objs["small"], ("answer",), root, {"ANSWER": 2})
    try:
        first.map("small_hash").update(b"\1\0\0\0", b"\x07" + b"\0" * 7)
        again = SharedObject(objs["small"], ("answer",), root, {"ANSWER": 2})
        try:
            assert (first.reused, again.reused) == (False, True)
            assert again.program("answer").id == first.program("answer").id
            assert again.program("answer").tag == first.program("answer").tag
            assert again.map("small_hash").lookup(b"\1\0\0\0") == b"\x07" + b"\0" * 7
            assert test_run(again.program("answer"), b"\0" * 64).verdict == 2
            with pytest.raises(NotFoundError, match="no program nope"):
                again.program("nope")
        finally:
            again.close()
        other = SharedObject(objs["small"], ("answer",), root, {"ANSWER": 1})
        try:
            assert not other.reused
            assert other.program("answer").id != first.program("answer").id
            assert test_run(other.program("answer"), b"\0" * 64).verdict == 1
            assert sorted(root.glob("prog_answer_*")) == [other.pins["answer"]]
        finally:
            other.close()
        rebuilt = objs["small"].parent / "small_rebuilt.o"
        rebuilt.write_bytes(objs["small"].read_bytes() + b"\0")  # another build, same code
        elsewhere = SharedObject(rebuilt, ("answer",), bpffs / "shared2", {"ANSWER": 1})
        try:
            assert not elsewhere.reused
            assert elsewhere.pins["answer"].parent == bpffs / "shared2"
            assert sorted(root.glob("prog_answer_*")) == [other.pins["answer"]]  # untouched
        finally:
            elsewhere.close()
    finally:
        first.close()


def test_map_full_raises_map_full_error(objs: dict[str, Path], bpffs: Path) -> None:
    """A hash map at max_entries refuses one more with MapFullError."""
    with BpfObject(objs["small"], pin_root=bpffs / "full") as obj:
        m = obj.load().map("small_hash")
        for k in range(2):
            m.update(k.to_bytes(4, "little"), b"\0" * 8)
        with pytest.raises(MapFullError, match=r"^update map small_hash: full \(2 entries\)$"):
            m.update((9).to_bytes(4, "little"), b"\0" * 8)
        assert len(m.lookup_all()) == 2


def test_test_run_reports_kernel_duration(bpffs: Path) -> None:
    """test_run returns the verdict, the packet and the kernel's ns per run."""
    with BpfObject("floor.bpf.o") as obj:
        r = test_run(obj.load().program("tc_pass"), b"\x01" * 64, repeat=1000)
    assert r.verdict == 0 and r.packet == b"\x01" * 64 and r.duration_ns > 0


@pytest.mark.parametrize("mode", ["tcx", "clsact"])
def test_tc_attach_replace_detach(host: Host, bpffs: Path, mode: str) -> None:
    """At TC ingress and egress: attach, replace atomically (one program, new id), detach,
    and detach again with nothing there."""
    with BpfObject("floor.bpf.o") as floor, BpfObject("endpoint.bpf.o") as ep, host.enter():
        floor.load()
        ep.load()
        idx = host.link("pdv0").ifindex
        for direction in ("ingress", "egress"):
            a = attach_tc(floor.program("tc_pass"), idx, direction, mode=mode)  # type: ignore[arg-type]
            assert (a.mode, a.prog_id) == (mode, floor.program("tc_pass").id)
            b = attach_tc(ep.program("from_container"), idx, direction, mode=mode)  # type: ignore[arg-type]
            assert tc_attached(idx, direction) == b  # type: ignore[arg-type]
            assert b.prog_id == ep.program("from_container").id != a.prog_id
            assert detach_tc(idx, direction) is True  # type: ignore[arg-type]
            assert detach_tc(idx, direction) is False  # type: ignore[arg-type]
            assert tc_attached(idx, direction) is None  # type: ignore[arg-type]
        filters = host.run(["tc", "filter", "show", "dev", "pdv0", "ingress"]).stdout
        assert "tc_pass" not in filters and "from_container" not in filters


def test_tcx_attachment_outlives_process(host: Host, bpffs: Path) -> None:
    """A tcx link is pinned: the program stays attached after its object is closed."""
    with host.enter():
        idx = host.link("pdv0").ifindex
        with BpfObject("floor.bpf.o") as floor:
            prog_id = attach_tc(floor.load().program("tc_pass"), idx).prog_id
        att = tc_attached(idx)
        assert att is not None and att.prog_id == prog_id
        assert detach_tc(idx) is True


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_xdp_attach_replace_detach(host: Host, bpffs: Path, mode: str) -> None:
    """At XDP: attach in a mode, replace, detach, detach again."""
    with BpfObject("floor.bpf.o") as floor, host.enter():
        prog = floor.load().program("xdp_pass")
        idx = host.link("pdv0").ifindex
        assert attach_xdp(prog, idx, mode).prog_id == prog.id  # type: ignore[arg-type]
        assert xdp_attached(idx, mode) == prog.id  # type: ignore[arg-type]
        attach_xdp(prog, idx, mode)  # type: ignore[arg-type]  # replace with itself
        assert "xdp" in host.ip("link", "show", "pdv0").stdout
        assert detach_xdp(idx) is True
        assert detach_xdp(idx) is False
        assert "prog/xdp" not in host.ip("link", "show", "pdv0").stdout


def test_attach_to_missing_device_is_one_line_error(bpffs: Path) -> None:
    """Attaching to an ifindex that does not exist names the program, the device and errno."""
    with BpfObject("floor.bpf.o") as floor:
        prog = floor.load().program("tc_pass")
        with pytest.raises(
            AttachError, match=r"^attach tc program tc_pass to \? \(ifindex 999999\) ingress: "
        ):
            attach_tc(prog, 999999, mode="tcx")
        with pytest.raises(AttachError, match="direction must be ingress or egress"):
            attach_tc(prog, 1, "sideways")  # type: ignore[arg-type]


def test_unprivileged_load_says_what_to_do(tmp_path: Path) -> None:
    """Without privileges, loading fails with one line naming the operation and the remedy."""
    code = (
        "from pydp.loader import BpfObject\n"
        "from pydp.errors import PydpError\n"
        "try:\n"
        f"    BpfObject('floor.bpf.o', pin_root=__import__('pathlib').Path('{tmp_path}')).load()\n"
        "except PydpError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout + r.stderr
    assert "Operation not permitted (run as root" in lines[0]


def test_ensure_root_mounts_bpffs_where_missing(tmp_path: Path) -> None:
    """A pin root outside any bpffs gets a bpffs mounted on it, and pins work there."""
    from pydp.loader import ensure_root

    root = tmp_path / "pins"
    assert not is_bpffs(root)
    try:
        assert ensure_root(root) == root and is_bpffs(root)
        with BpfObject("endpoint.bpf.o", pin_root=root) as obj:
            obj.load()
        assert (root / "pydp_endpoints").exists()
    finally:
        subprocess.run(["umount", str(root)], check=False)
    assert not is_bpffs(root)
