"""The ``minipay`` command line.

Each part registers its commands here; the heavy imports happen inside the commands so that
``minipay --version`` stays instant.
"""

from __future__ import annotations

from typing import Annotated

import typer

from minipay import __version__

app = typer.Typer(
    name="minipay",
    help="WeChat Pay Global Mini Program payments for institutions: SDK, service and sandbox.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"minipay {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Minipay command line."""


def main() -> None:
    app()
