"""The ``odpmap pull`` command, registered through the CLI hook like a plugin's command."""

from __future__ import annotations

from typing import Any

from ..hookspecs import hookimpl


@hookimpl
def odpmap_register_commands(cli: Any) -> None:
    from ..pull import pull_command

    cli.add_command(pull_command)
