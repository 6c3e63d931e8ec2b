"""The pydp command line: usage errors, exit codes, tables."""

from __future__ import annotations

import pytest

from pydp.cli import main, table


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Error: the following arguments are required: COMMAND"),
        (["frobnicate"], "Error: argument COMMAND: invalid choice: 'frobnicate'"),
        (["metrics", "--format", "yaml"], "Error: argument --format: invalid choice: 'yaml'"),
        (["endpoint"], "Error: the following arguments are required: VERB"),
        (["node"], "Error: the following arguments are required: VERB"),
        (["node", "ls", "--format", "yaml"], "Error: argument --format: invalid choice: 'yaml'"),
        (["--node"], "Error: argument --node: expected one argument"),
    ],
)
def test_cli_usage_error_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A usage error prints one 'Error:' line naming what was wrong, and exits 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message), err


def test_cli_table_aligns_columns() -> None:
    """Tables have UPPERCASE headers and columns aligned to the widest cell."""
    assert table([["10.0.0.2", 5], ["10.0.0.10", 12]], ["address", "ifindex"]) == (
        "ADDRESS    IFINDEX\n10.0.0.2   5\n10.0.0.10  12"
    )


def test_missing_libbpf_is_one_line_saying_what_to_install() -> None:
    """Without libbpf.so.1, importing the loader fails with one line naming the package."""
    import subprocess
    import sys

    code = (
        "import cffi\n"
        "def refuse(self, name, *a):\n"
        "    raise OSError(f'cannot load library {name!r}')\n"
        "cffi.FFI.dlopen = refuse\n"
        "from pydp.errors import DatapathError\n"
        "try:\n"
        "    import pydp.loader\n"
        "except DatapathError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout == (
        "load libbpf.so.1: cannot load library 'libbpf.so.1': install libbpf 1.x"
        " (apt-get install libbpf1)\n"
    ), r.stderr
