"""libbpf.so.1 through cffi in ABI mode: declarations, the library handle, errno checks."""

from __future__ import annotations

import logging
import threading
from typing import Any

import cffi

from pydp.errors import DatapathError, PydpError

__all__ = ["check", "check_ptr", "errno", "ffi", "last_warning", "lib"]

log = logging.getLogger("pydp.libbpf")

ffi = cffi.FFI()
ffi.cdef(
    """
struct bpf_object; struct bpf_program; struct bpf_map; struct btf; struct btf_ext;
struct btf_type { uint32_t name_off; uint32_t info; uint32_t size_or_type; };
struct btf_member { uint32_t name_off; uint32_t type; uint32_t offset; };
struct btf_var_secinfo { uint32_t type; uint32_t offset; uint32_t size; };

typedef int (*libbpf_print_fn_t)(int level, const char *fmt, void *args);
libbpf_print_fn_t libbpf_set_print(libbpf_print_fn_t fn);
int vsnprintf(char *str, size_t size, const char *format, void *ap);

struct bpf_object *bpf_object__open_file(const char *path, const void *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj,
                                             struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
int bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);

const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
const char *bpf_map__pin_path(const struct bpf_map *map);
bool bpf_map__is_internal(const struct bpf_map *map);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);

int bpf_map_lookup_elem(int fd, const void *key, void *value);
int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags);
int bpf_map_delete_elem(int fd, const void *key);
int bpf_map_get_next_key(int fd, const void *key, void *next_key);
struct bpf_map_batch_opts { size_t sz; uint64_t elem_flags; uint64_t flags; };
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
                         uint32_t *count, const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count,
                         const struct bpf_map_batch_opts *opts);
int bpf_map_delete_batch(int fd, const void *keys, uint32_t *count,
                         const struct bpf_map_batch_opts *opts);

struct bpf_map_create_opts {
    size_t sz; uint32_t btf_fd; uint32_t btf_key_type_id; uint32_t btf_value_type_id;
    uint32_t btf_vmlinux_value_type_id; uint32_t inner_map_fd; uint32_t map_flags;
    uint64_t map_extra; uint32_t numa_node; uint32_t map_ifindex;
};
int bpf_map_create(int map_type, const char *map_name, uint32_t key_size, uint32_t value_size,
                   uint32_t max_entries, const struct bpf_map_create_opts *opts);

int bpf_obj_pin(int fd, const char *pathname);
int bpf_obj_get(const char *pathname);
int bpf_obj_get_info_by_fd(int bpf_fd, void *info, uint32_t *info_len);
int bpf_prog_get_fd_by_id(uint32_t id);
int bpf_map_get_fd_by_id(uint32_t id);
int libbpf_num_possible_cpus(void);

/* Prefixes of the kernel's info structs (the kernel fills min(len, its size)). */
struct pydp_map_info {
    uint32_t type; uint32_t id; uint32_t key_size; uint32_t value_size;
    uint32_t max_entries; uint32_t map_flags; char name[16];
};
struct pydp_prog_info {
    uint32_t type; uint32_t id; uint8_t tag[8];
};
struct pydp_link_info {
    uint32_t type; uint32_t id; uint32_t prog_id; uint32_t pad;
    uint32_t ifindex; uint32_t attach_type; uint64_t rest[6];
};

struct bpf_link_create_opts_head { size_t sz; uint32_t flags; };
int bpf_link_create(int prog_fd, int target_fd, int attach_type, const void *opts);
struct bpf_link_update_opts { size_t sz; uint32_t flags; uint32_t old_prog_fd; };
int bpf_link_update(int link_fd, int new_prog_fd, const struct bpf_link_update_opts *opts);
int bpf_link_detach(int link_fd);
int bpf_prog_query(int target_fd, int type, uint32_t query_flags, uint32_t *attach_flags,
                   uint32_t *prog_ids, uint32_t *prog_cnt);

struct bpf_tc_hook { size_t sz; int ifindex; int attach_point; uint32_t parent; };
struct bpf_tc_opts {
    size_t sz; int prog_fd; uint32_t flags; uint32_t prog_id; uint32_t handle; uint32_t priority;
};
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

struct bpf_xdp_attach_opts { size_t sz; int old_prog_fd; };
int bpf_xdp_attach(int ifindex, int prog_fd, uint32_t flags,
                   const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, uint32_t flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query_id(int ifindex, int flags, uint32_t *prog_id);

struct bpf_test_run_opts {
    size_t sz; const void *data_in; void *data_out; uint32_t data_size_in;
    uint32_t data_size_out; const void *ctx_in; void *ctx_out; uint32_t ctx_size_in;
    uint32_t ctx_size_out; uint32_t retval; int repeat; uint32_t duration; uint32_t flags;
    uint32_t cpu; uint32_t batch_size;
};
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

struct btf *btf__parse(const char *path, struct btf_ext **btf_ext);
void btf__free(struct btf *btf);
int32_t btf__find_by_name_kind(const struct btf *btf, const char *type_name, uint32_t kind);
const struct btf_type *btf__type_by_id(const struct btf *btf, uint32_t id);
const char *btf__name_by_offset(const struct btf *btf, uint32_t offset);
int64_t btf__resolve_size(const struct btf *btf, uint32_t type_id);
uint32_t btf__type_cnt(const struct btf *btf);
"""
)


def _open() -> Any:
    try:
        return ffi.dlopen("libbpf.so.1")
    except OSError as e:
        raise DatapathError(
            f"load libbpf.so.1: {e}: install libbpf 1.x (apt-get install libbpf1)"
        ) from e


lib: Any = _open()
_libc: Any = ffi.dlopen(None)


def _print(level: int, fmt: Any, args: Any) -> int:
    buf = ffi.new("char[]", 4096)
    _libc.vsnprintf(buf, 4096, fmt, args)
    text = ffi.string(buf).decode(errors="replace").rstrip()
    # libbpf levels: 0 warn, 1 info, 2 debug
    if text.startswith("libbpf: Kernel error message:"):
        level = 2  # netlink's extack for a condition pydp handles (e.g. nothing to detach)
    log.log((logging.WARNING, logging.INFO, logging.DEBUG)[min(level, 2)], "%s", text)
    if level == 0:
        _warnings.last = text.removeprefix("libbpf: ")
    return 0


_warnings = threading.local()


def last_warning(reset: bool = False) -> str:
    """The last warning libbpf printed on this thread ('' if none); reset forgets it."""
    text = str(getattr(_warnings, "last", ""))
    if reset:
        _warnings.last = ""
    return text


_print_cb = ffi.callback("int(int, const char *, void *)", _print)  # kept alive here
lib.libbpf_set_print(_print_cb)


def errno() -> int:
    """The calling thread's errno as libbpf left it."""
    return int(ffi.errno)


def check(ret: int, operation: str, cls: type[PydpError] = DatapathError) -> int:
    """Return ret, or raise cls with the kernel's words when it is a negative errno."""
    if ret < 0:
        raise cls.from_errno(operation, -ret)
    return ret


def check_ptr(ptr: Any, operation: str, cls: type[PydpError] = DatapathError) -> Any:
    """Return ptr, or raise cls with errno's words when libbpf returned NULL."""
    if ptr == ffi.NULL:
        raise cls.from_errno(operation, ffi.errno or 22)
    return ptr
