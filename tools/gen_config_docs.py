"""Render the configuration reference (every environment variable) from the settings classes.

`make docs` writes it into docs/configuration.md between the config markers; a test fails when
that file is out of date, so the table cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from generated import write_or_check

from soundsentry.services.catalog import SETTINGS, default_text

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"


def _default(value: object) -> str:
    text = default_text(value)
    return text if value is None or value in ("", {}) else f"`{text}`"


def render() -> str:
    lines = []
    for cls in SETTINGS:
        prefix = str(cls.model_config.get("env_prefix", ""))
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines += [
            f"**{cls.__name__}**: {doc}",
            "",
            "| variable | default | meaning |",
            "| --- | --- | --- |",
        ]
        for name, field in cls.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            default = _default(field.get_default(call_default_factory=True))
            lines.append(f"| `{prefix}{name.upper()}` | {default} | {description} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def updated(document: str) -> str:
    head, _, rest = document.partition(START)
    _, _, tail = rest.partition(END)
    if not rest or (not tail and END not in rest):
        raise SystemExit(f"{REFERENCE} needs the markers {START} and {END}")
    return f"{head}{START}\n{render()}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    return write_or_check(
        {REFERENCE: updated(REFERENCE.read_text())}, argv, description=__doc__, command="make docs"
    )


if __name__ == "__main__":
    sys.exit(main())
