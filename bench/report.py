"""Print benchmark results as tables: ``python -m bench.report [DIR_OR_FILE ...]``.

With no argument it reads ``bench/results``. Each ``<suite>.json`` there (the
format of ``bench._results``) is printed under its suite's name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench._results import format_table, load_rows

__all__ = ["main", "result_files"]

DEFAULT_DIR = Path(__file__).resolve().parent / "results"


def result_files(paths: list[Path]) -> list[Path]:
    """The JSON files named, or found directly in the directories named, sorted."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("paths", nargs="*", type=Path, help="results directories or files")
    args = parser.parse_args(argv)
    files = result_files(args.paths or [DEFAULT_DIR])
    if not files:
        where = " ".join(str(p) for p in args.paths or [DEFAULT_DIR])
        print(f"Error: no results (*.json) in {where}: run `make bench`", file=sys.stderr)
        return 1
    for i, path in enumerate(files):
        try:
            rows = load_rows(path)
        except (OSError, ValueError, TypeError) as e:
            print(f"Error: read {path}: {e}", file=sys.stderr)
            return 1
        if i:
            print()
        print(f"== {path.stem} ({path})")
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
