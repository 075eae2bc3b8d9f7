"""The one command-line shape of the generators in tools/: write the generated files, or with
``--check`` only say which are stale (a test runs every generator with ``--check``)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path


def write_or_check(
    files: Mapping[Path, str], argv: list[str] | None, *, description: str | None, command: str
) -> int:
    """Write each file's text, or with ``--check`` in ``argv`` return 1 (naming the stale
    files and ``command``, which regenerates them) unless they all hold it already."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    if parser.parse_args(argv).check:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"stale: {', '.join(p.name for p in stale)}: run `{command}`")
            return 1
        return 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 0
