"""``python -m calliope_graph.engines``: print the conversion × provider support matrix.

``--write-readme PATH`` rewrites the section of PATH between ``<!-- matrix:start -->`` and
``<!-- matrix:end -->`` with the current table (what tests/test_matrix.py checks).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from calliope_graph.engines._registry import markdown_matrix, write_matrix
from calliope_graph.errors import ConfigurationError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calliope_graph.engines",
        description="Print which providers serve which conversions (a Markdown table).",
    )
    parser.add_argument(
        "--write-readme",
        metavar="PATH",
        type=Path,
        help="rewrite the matrix section of PATH (between the matrix markers) in place",
    )
    args = parser.parse_args(argv)
    if args.write_readme is None:
        sys.stdout.write(markdown_matrix())
        return 0
    path: Path = args.write_readme
    try:
        text = path.read_text(encoding="utf-8")
        path.write_text(write_matrix(text), encoding="utf-8")
    except (OSError, ConfigurationError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    sys.stdout.write(f"updated the support matrix in {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
