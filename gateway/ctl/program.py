"""loyaltyctl: `apply -f` and `program get`: the app's program."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from loyalty.gateway.v1 import admin_pb2

from gateway.ctl.cli import JsonFlag, admin, app, call, program_app
from gateway.ctl.output import as_dict, show_json


@app.command()
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="Program YAML.", exists=True)],
    dry_run: Annotated[bool, typer.Option(help="Only validate.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Validate the whole program, then configure every service with it."""
    with admin() as (stub, _):
        answer = call(
            stub.ApplyProgram,
            admin_pb2.ApplyProgramRequest(
                program_yaml=file.read_text(encoding="utf-8"), dry_run=dry_run
            ),
            timeout=120,
        )
    if as_json:
        show_json(as_dict(answer))
    elif answer.errors:
        typer.echo(f"{len(answer.errors)} error(s); nothing was changed:", err=True)
        for error in answer.errors:
            typer.echo(f"  {error}", err=True)
    elif answer.applied:
        typer.echo(f"applied: version {answer.version}")
    else:
        typer.echo("valid (dry run): nothing was changed")
    if answer.errors:
        raise typer.Exit(1)


@program_app.command("get")
def program_get(as_json: JsonFlag = False) -> None:
    """Print the applied program."""
    with admin() as (stub, _):
        answer = call(stub.GetProgram, admin_pb2.GetProgramRequest())
    if as_json:
        show_json(as_dict(answer))
    else:
        typer.echo(f"# version {answer.version}")
        typer.echo(answer.program_yaml, nl=False)
