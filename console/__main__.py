"""``python -m console serve``: the console on uvicorn (uvloop), settings from the environment."""

from __future__ import annotations

import typer
import uvicorn

from console.app import create_app
from console.settings import ConsoleSettings

cli = typer.Typer(
    add_completion=False, help="The loyalty ops console (a web app over AdminService)."
)


@cli.callback()
def main() -> None:
    """The loyalty ops console."""


@cli.command()
def serve() -> None:
    """Serves the console on LOYALTY_CONSOLE_HOST:LOYALTY_CONSOLE_PORT, talking to the gateway at
    LOYALTY_CONSOLE_GATEWAY."""
    settings = ConsoleSettings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        log_level="warning",
        proxy_headers=False,
    )


if __name__ == "__main__":
    cli()
