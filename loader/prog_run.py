"""Run a loaded program on a crafted packet in the kernel (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

from dataclasses import dataclass

from pydp.errors import DatapathError
from pydp.loader._libbpf import ffi, lib
from pydp.loader.object import Program

__all__ = ["RunResult", "test_run"]

OUT_HEADROOM = 512  # room for a program that grows the packet (encapsulation)


@dataclass(frozen=True, slots=True)
class RunResult:
    """What the program returned, the packet as it left, and the kernel's ns per run."""

    verdict: int
    packet: bytes
    duration_ns: int


def test_run(
    program: Program, packet: bytes, repeat: int = 1, ctx: bytes | None = None
) -> RunResult:
    """Run program on packet repeat times; the duration is the kernel's average per run."""
    out = ffi.new("char[]", len(packet) + OUT_HEADROOM)
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data_in = ffi.from_buffer(packet)
    opts.data_in = data_in
    opts.data_size_in = len(packet)
    opts.data_out = out
    opts.data_size_out = len(out)
    opts.repeat = repeat
    if ctx is not None:
        ctx_in = ffi.from_buffer(ctx)
        opts.ctx_in = ctx_in
        opts.ctx_size_in = len(ctx)
    ret = lib.bpf_prog_test_run_opts(program.fd, opts)
    if ret != 0:
        raise DatapathError.from_errno(
            f"test run of program {program.name} on {len(packet)} bytes", -ret
        )
    return RunResult(int(opts.retval), ffi.buffer(out, opts.data_size_out)[:], int(opts.duration))


test_run.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
