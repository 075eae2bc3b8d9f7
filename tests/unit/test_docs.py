"""Documentation that is generated from code must match the code."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from soundsentry.cli import build_parser
from soundsentry.services.catalog import SETTINGS


@pytest.mark.parametrize(
    "generator", ["gen_config_docs.py", "gen_dashboards.py", "gen_prometheus_rule.py"]
)
def test_generated_files_are_up_to_date(repo_root: Path, generator: str) -> None:
    """The configuration reference, the Grafana dashboards, the k8s PrometheusRule."""
    result = subprocess.run(
        [sys.executable, str(repo_root / "tools" / generator), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_documented_with_a_meaning() -> None:
    for cls in SETTINGS:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"


def _readme_commands(readme: str) -> list[list[str]]:
    """The ``soundsentry`` commands in README.md's shell blocks, as argument lists (shell
    variables of the block substituted, continuation lines joined, pipes and redirections cut)."""
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", readme, flags=re.DOTALL):
        variables: dict[str, str] = {}
        for raw in block.replace("\\\n", " ").splitlines():
            line = raw.split(" #", 1)[0].strip()
            if line.startswith("#"):
                continue
            assignments = re.findall(r"(?:^|\s)([A-Z]+)=(\S+)", line)
            variables.update(assignments)
            if assignments and all("=" in word for word in line.split()):
                continue  # only assignments, no command
            for name, value in variables.items():
                line = line.replace(f"${name}", value)
            for part in re.split(r"&&|\|", line):
                words = shlex.split(part.split(">", 1)[0].rstrip("& "))
                starts = [i for i, w in enumerate(words) if w.endswith("bin/soundsentry")]
                if starts:
                    commands.append(words[starts[0] + 1 :])
    return commands


def test_every_command_in_the_readme_exists_and_parses(repo_root: Path) -> None:
    # The README cannot drift from the command line: each of its commands parses.
    commands = _readme_commands((repo_root / "README.md").read_text(encoding="utf-8"))
    assert len(commands) > 20
    parser = build_parser()
    for args in commands:
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(
                f"README command does not parse ({exc.code}): soundsentry {shlex.join(args)}"
            )


def test_every_command_shows_an_example_that_parses() -> None:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    assert commands
    for name, command in commands.items():
        assert command.epilog, f"soundsentry {name} --help shows no example"
        words = shlex.split(command.epilog.removeprefix("example: "))
        args = words[words.index("soundsentry") + 1 :]
        assert args[0] == name
        try:
            parser.parse_args(args)
        except SystemExit as exc:
            pytest.fail(f"the example of {name} does not parse ({exc.code}): {command.epilog}")
