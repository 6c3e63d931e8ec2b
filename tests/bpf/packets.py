"""Packet tables for BPF_PROG_TEST_RUN: one case per row, decoded on failure."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from netaddr import EUI, IPAddress
from scapy.layers.l2 import Ether

from pydp.loader import Program, test_run
from pydp.maps import Counter, Endpoint, EndpointMap, Iface, IfaceMap, MetricsMap, reason_name

TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT = 0, 2, 7
VERDICTS = {TC_ACT_OK: "TC_ACT_OK", TC_ACT_SHOT: "TC_ACT_SHOT", TC_ACT_REDIRECT: "TC_ACT_REDIRECT"}


@dataclass(frozen=True)
class Case:
    """One row: what is in the maps, what goes in, what must come out and be counted."""

    desc: str
    packet: bytes
    verdict: int
    reason: str  # the enum pydp_reason name counted once for this packet
    expect: bytes | Callable[[bytes], bytes] | None = None  # None: unchanged
    endpoints: Mapping[IPAddress, Endpoint] = field(default_factory=dict)
    ifindex: int | None = None  # the interface the packet arrives on (skb->ifindex)
    ifaces: Mapping[int, Iface] = field(default_factory=dict)  # pydp_ifaces entries

    def expected_output(self) -> bytes:
        if self.expect is None:
            return self.packet
        return self.expect(self.packet) if callable(self.expect) else self.expect


def decode(raw: bytes) -> str:
    """A packet as scapy shows it, for failure messages."""
    try:
        return str(Ether(raw).show2(dump=True))
    except Exception as e:  # a malformed packet is still worth a hex dump
        return f"<undecodable: {e}> {raw.hex()}"


def run_case(
    program: Program,
    endpoints: EndpointMap,
    metrics: MetricsMap,
    case: Case,
    ifaces: IfaceMap | None = None,
) -> None:
    """Set the maps up, run the program once, check verdict, output bytes and counter."""
    endpoints.clear()
    endpoints.update_batch({IPAddress(ip): ep for ip, ep in case.endpoints.items()})
    if ifaces is not None:
        ifaces.update_batch({i: IfaceMap.EMPTY for i in range(4)} | dict(case.ifaces))
    before = metrics.counter(case.reason)
    result = test_run(
        program, case.packet, ctx=None if case.ifindex is None else skb_ctx(case.ifindex)
    )
    assert result.verdict == case.verdict, (
        f"{case.desc}: verdict {VERDICTS.get(result.verdict, result.verdict)}, "
        f"expected {VERDICTS.get(case.verdict, case.verdict)}"
    )
    want = case.expected_output()
    assert result.packet == want, (
        f"{case.desc}: output differs\n--- got\n{decode(result.packet)}\n"
        f"--- expected\n{decode(want)}"
    )
    after = metrics.counter(case.reason)
    assert after.packets - before.packets == 1, f"{case.desc}: {case.reason} not counted once"
    assert after.bytes - before.bytes == len(case.packet)


SKB_SIZE, SKB_IFINDEX = 192, 40  # sizeof(struct __sk_buff), offsetof(ifindex): UAPI, fixed


def skb_ctx(ifindex: int) -> bytes:
    """A struct __sk_buff for test_run with only ifindex set (the kernel needs the device)."""
    ctx = bytearray(SKB_SIZE)
    ctx[SKB_IFINDEX : SKB_IFINDEX + 4] = ifindex.to_bytes(4, "little")
    return bytes(ctx)


def mac(text: str) -> EUI:
    return EUI(text)


__all__ = ["Case", "Counter", "decode", "mac", "reason_name", "run_case"]
