"""Every CLI command, exit code and setting is documented; the public API is guarded."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import typer

from healthmesh.cli import ExitCode, app
from healthmesh.settings import SETTINGS_HELP, Settings

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _commands(group: Any, prefix: str = "") -> list[str]:
    names: list[str] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if hasattr(command, "list_commands"):  # a group (typer has its own group class)
            names.extend(_commands(command, f"{prefix}{name} "))
        else:
            names.append(prefix + name)
    return names


def test_every_command_is_documented() -> None:
    text = (DOCS / "reference/cli.md").read_text()
    commands = _commands(typer.main.get_command(app))
    assert "ingest" in commands and "node init" in commands
    for name in commands:
        assert f"`healthmesh {name}" in text, f"command '{name}' is not in docs/reference/cli.md"


def test_every_exit_code_is_documented() -> None:
    text = (DOCS / "reference/cli.md").read_text()
    for code in ExitCode:
        assert f"| {code.value} | `{code.name}` |" in text, f"exit code {code.name} undocumented"


def test_every_setting_has_help_and_docs() -> None:
    text = (DOCS / "reference/settings.md").read_text()
    for f in fields(Settings):
        assert SETTINGS_HELP.get(f.name), f"setting {f.name} has no help text"
        assert f"| `{f.name}` |" in text, f"setting {f.name} is not in docs/reference/settings.md"


def test_public_api_names() -> None:
    import healthmesh
    import healthmesh.errors

    assert healthmesh.__all__ == ["__version__", "connect"]
    assert "FhirError" in healthmesh.errors.__all__
    for name in healthmesh.errors.__all__:
        assert hasattr(healthmesh.errors, name)
