"""A compiled BPF object: open, set load-time constants, pin maps, load, find programs."""

from __future__ import annotations

import errno as E
import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydp.errors import DatapathError, NotFoundError, VerifierError
from pydp.loader._libbpf import ffi, last_warning, lib
from pydp.loader.btf import Btf
from pydp.loader.maps import Map
from pydp.loader.pin import bpffs_root, ensure_root

__all__ = ["BpfObject", "Program", "SharedObject", "object_dir", "prog_tag"]

log = logging.getLogger(__name__)

LOG_BUF_SIZE = 1 << 20  # verifier log kept per program on a failed load
LOG_TAIL_LINES = 20  # lines of the log quoted in a VerifierError message


def object_dir() -> Path:
    """Where ``make bpf`` puts the compiled objects (``$PYDP_BPF_DIR`` overrides)."""
    env = os.environ.get("PYDP_BPF_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "build" / "bpf"


@dataclass(frozen=True, slots=True)
class Program:
    """A loaded program: its name, fd and kernel type (enum bpf_prog_type)."""

    name: str
    fd: int
    prog_type: int
    section: str

    @property
    def id(self) -> int:
        return int(_prog_info(self.fd, self.name).id)

    @property
    def tag(self) -> bytes:
        """The kernel's hash of the instructions: equal tags, equal code (map fds aside)."""
        return bytes(_prog_info(self.fd, self.name).tag)


def _prog_info(fd: int, name: str) -> Any:
    info = ffi.new("struct pydp_prog_info *")
    size = ffi.new("uint32_t *", ffi.sizeof("struct pydp_prog_info"))
    if lib.bpf_obj_get_info_by_fd(fd, info, size) != 0:
        raise DatapathError.from_errno(f"read info of program {name}", ffi.errno)
    return info


def prog_tag(prog_id: int) -> bytes | None:
    """The tag of the loaded program with this id, None when it is gone."""
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        if ffi.errno == E.ENOENT:
            return None
        raise DatapathError.from_errno(f"open program id {prog_id}", ffi.errno)
    try:
        return bytes(_prog_info(fd, f"id {prog_id}").tag)
    finally:
        os.close(fd)


def _object_path(path: Path | str) -> Path:
    p = Path(path)
    return p if p.is_absolute() or p.exists() else object_dir() / p


class BpfObject:
    """One ELF object from build/bpf, opened with its pinned maps under a bpffs root.

    Maps declared ``LIBBPF_PIN_BY_NAME`` are pinned as ``<root>/<map name>``; on
    a reload the pinned maps are reused, contents included, so traffic sees no gap.
    """

    def __init__(self, path: Path | str, pin_root: Path | None = None) -> None:
        self._obj: Any = ffi.NULL
        self.path = _object_path(path)
        self.pin_root = pin_root or bpffs_root()
        self.loaded = False
        self._maps: dict[str, Map] = {}
        last_warning(reset=True)
        obj = lib.bpf_object__open_file(str(self.path).encode(), ffi.NULL)
        if obj == ffi.NULL:
            err = ffi.errno or E.EINVAL
            why = "run `make bpf`" if err == E.ENOENT else last_warning() or "not a BPF object"
            raise DatapathError(f"open BPF object {self.path}: {why}", err)
        self._obj = obj
        self._log_bufs: list[Any] = []
        self._pinned = self._set_pin_paths()

    def _set_pin_paths(self) -> bool:
        pinned = False
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            if lib.bpf_map__pin_path(m) != ffi.NULL:
                name = ffi.string(lib.bpf_map__name(m)).decode()
                lib.bpf_map__set_pin_path(m, str(self.pin_root / name).encode())
                pinned = True
            m = lib.bpf_object__next_map(self._obj, m)
        return pinned

    def _programs(self) -> list[Any]:
        out = []
        p = lib.bpf_object__next_program(self._obj, ffi.NULL)
        while p != ffi.NULL:
            out.append(p)
            p = lib.bpf_object__next_program(self._obj, p)
        return out

    def _rodata_map(self) -> Any:
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            name = ffi.string(lib.bpf_map__name(m)).decode()
            if lib.bpf_map__is_internal(m) and name.endswith(".rodata"):
                return m
            m = lib.bpf_object__next_map(self._obj, m)
        raise NotFoundError(f"object {self.path.name}: no .rodata section")

    def set_rodata(self, name: str, value: int | bytes) -> None:
        """Set a ``const volatile`` load-time constant; only between open and load."""
        if self.loaded:
            raise DatapathError(f"set {name} in {self.path.name}: the object is loaded already")
        btf = Btf(lib.bpf_object__btf(self._obj), owned=False)
        var = next((v for v in btf.datasec(".rodata") if v.name == name), None)
        if var is None:
            raise NotFoundError(f"object {self.path.name}: no load-time constant {name}")
        raw = value if isinstance(value, bytes) else value.to_bytes(var.size, "little")
        if len(raw) != var.size:
            raise DatapathError(f"set {name}: {len(raw)} bytes given, it holds {var.size}")
        m = self._rodata_map()
        size = ffi.new("size_t *")
        data = bytearray(ffi.buffer(lib.bpf_map__initial_value(m, size), size[0]))
        data[var.offset : var.offset + var.size] = raw
        if lib.bpf_map__set_initial_value(m, bytes(data), len(data)) != 0:
            raise DatapathError.from_errno(f"set {name} in {self.path.name}", ffi.errno)

    def load(self) -> BpfObject:
        """Load every program (verifier) and create or reuse the pinned maps."""
        if self._pinned:
            ensure_root(self.pin_root)
        progs = self._programs()
        for p in progs:
            buf = ffi.new("char[]", LOG_BUF_SIZE)
            self._log_bufs.append(buf)
            lib.bpf_program__set_log_buf(p, buf, LOG_BUF_SIZE)
        last_warning(reset=True)
        ret = lib.bpf_object__load(self._obj)
        if ret != 0:
            self._raise_load_error(-ret, progs)
        self.loaded = True
        log.info("loaded %s (pins under %s)", self.path.name, self.pin_root)
        return self

    def _raise_load_error(self, err: int, progs: list[Any]) -> None:
        for p, buf in zip(progs, self._log_bufs, strict=True):
            text = ffi.string(buf).decode(errors="replace").strip()
            if text:
                name = ffi.string(lib.bpf_program__name(p)).decode()
                tail = "\n".join(text.splitlines()[-LOG_TAIL_LINES:])
                raise VerifierError(
                    f"load program {name} from {self.path.name}: verifier rejected it "
                    f"({E.errorcode.get(err, err)}):\n{tail}",
                    program=name,
                    log=text,
                    errno=err,
                )
        why = last_warning() or E.errorcode.get(err, str(err))
        raise DatapathError.from_errno(f"load {self.path.name} ({why})", err)

    def program(self, name: str) -> Program:
        """A loaded program by its C function name."""
        for p in self._programs():
            if ffi.string(lib.bpf_program__name(p)).decode() == name:
                if not self.loaded:
                    raise DatapathError(f"program {name}: the object is not loaded")
                return Program(
                    name,
                    lib.bpf_program__fd(p),
                    lib.bpf_program__type(p),
                    ffi.string(lib.bpf_program__section_name(p)).decode(),
                )
        raise NotFoundError(f"object {self.path.name}: no program {name}")

    @property
    def programs(self) -> dict[str, Program]:
        names = [ffi.string(lib.bpf_program__name(p)).decode() for p in self._programs()]
        return {n: self.program(n) for n in names}

    def map(self, name: str) -> Map:
        """A map of the loaded object by name; valid while the object is open."""
        if name in self._maps:
            return self._maps[name]
        m = lib.bpf_object__next_map(self._obj, ffi.NULL)
        while m != ffi.NULL:
            if ffi.string(lib.bpf_map__name(m)).decode() == name:
                fd = lib.bpf_map__fd(m)
                if fd < 0:
                    raise DatapathError(f"map {name}: the object is not loaded")
                self._maps[name] = Map(fd)
                return self._maps[name]
            m = lib.bpf_object__next_map(self._obj, m)
        raise NotFoundError(f"object {self.path.name}: no map {name}")

    def close(self) -> None:
        """Release the object; pinned maps and attached programs stay in the kernel."""
        if self._obj != ffi.NULL:
            lib.bpf_object__close(self._obj)
            self._obj = ffi.NULL
            self._maps.clear()

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


SHARED_PREFIX = "prog_"  # <root>/prog_<program>_<digest>: a program shared by its pin


class SharedObject:
    """Programs of an object, loaded once per pin root and shared by every user after.

    The first user loads the object (the verifier runs) and pins each named program as
    ``<root>/prog_<name>_<digest>``, the digest being of the object file and the load-time
    constants: the same build with the same settings finds the pins and opens them
    instead, so N containers run one program, not N copies (each ~100 KB of kernel memory
    and ~0.1 s of verification). A new build pins anew and unpins the older ones (programs
    still attached stay loaded until detached). The object's maps are the root's pinned
    maps (``LIBBPF_PIN_BY_NAME``), so shared programs and a fresh load see the same maps;
    `map` opens them from their pins when nothing was loaded here.
    """

    def __init__(
        self,
        path: Path | str,
        names: tuple[str, ...],
        root: Path | None = None,
        rodata: Mapping[str, int] | None = None,
    ) -> None:
        self.root = root or bpffs_root()
        self._obj: BpfObject | None = None
        self._maps: dict[str, Map] = {}
        self._fds: list[int] = []
        self._programs: dict[str, Program] = {}
        obj_path = _object_path(path)
        digest = hashlib.sha256(obj_path.read_bytes() if obj_path.exists() else b"")
        digest.update(repr(sorted((rodata or {}).items())).encode())
        self.pins = {n: self.root / f"{SHARED_PREFIX}{n}_{digest.hexdigest()[:16]}" for n in names}
        self.reused = self._open_pins()
        if self.reused:
            return
        obj = BpfObject(obj_path, pin_root=self.root)
        try:
            for var, value in (rodata or {}).items():
                obj.set_rodata(var, value)
            obj.load()
            self._programs = {n: obj.program(n) for n in names}
        except BaseException:
            obj.close()
            raise
        self._obj = obj
        for name in names:
            self._pin(name)

    def _open_pins(self) -> bool:
        """Open every program's pin; False (nothing kept open) unless all are there."""
        for name, pin in self.pins.items():
            fd = lib.bpf_obj_get(str(pin).encode())
            if fd < 0:
                self.close()
                self._programs.clear()
                return False
            self._fds.append(fd)
            self._programs[name] = Program(name, fd, int(_prog_info(fd, name).type), "")
        return True

    def _pin(self, name: str) -> None:
        """Pin a loaded program (a racing user may have pinned the same build: fine) and
        unpin other builds of it."""
        pin = self.pins[name]
        if lib.bpf_obj_pin(self._programs[name].fd, str(pin).encode()) != 0:
            err = ffi.errno
            if err != E.EEXIST:
                raise DatapathError.from_errno(f"pin program {name} as {pin}", err)
        for old in self.root.glob(f"{SHARED_PREFIX}{name}_*"):
            if old != pin:
                old.unlink(missing_ok=True)
                log.info("unpinned %s (another build)", old)

    def program(self, name: str) -> Program:
        """One of the shared programs, by its C function name."""
        if name not in self._programs:
            raise NotFoundError(f"shared programs {sorted(self._programs)}: no program {name}")
        return self._programs[name]

    def map(self, name: str) -> Map:
        """A map of the programs' object, by name (the root's pin)."""
        if self._obj is not None:
            return self._obj.map(name)
        if name not in self._maps:
            self._maps[name] = Map.open_pinned(name, self.root)
        return self._maps[name]

    def close(self) -> None:
        """Let go of the object or the pins' fds; the pinned programs stay."""
        if self._obj is not None:
            self._obj.close()
            self._obj = None
        for m in self._maps.values():
            m.close()
        self._maps.clear()
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()
