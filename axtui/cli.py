"""The ``axtui`` command. One function a command; all wiring is here.

Exit codes: 0 success, 1 the command failed, 2 bad usage or config, 3 cannot reach or
authenticate with the hub.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from axtui import __version__

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


def _load(config_path: Path | None, **overrides: object):  # type: ignore[no-untyped-def]
    """Load the config (with command-line overrides) or exit 2 with its one clear message."""
    from server.config import ConfigError, load_config

    try:
        config = load_config(config_path)
        return config.with_overrides(**overrides)  # type: ignore[arg-type]
    except ConfigError as exc:
        click.echo(f"axtui: {exc}", err=True)
        sys.exit(EXIT_USAGE)


def _run_hub(config) -> None:  # type: ignore[no-untyped-def]
    from server.app import run, serve_until_stopped, setup_logging
    from server.catalog import DataDirLocked

    setup_logging(config)
    try:
        run(serve_until_stopped(config))
    except DataDirLocked as exc:
        click.echo(f"axtui: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except OSError as exc:
        click.echo(f"axtui: cannot listen on {config.hub.host}:{config.hub.port}: {exc}", err=True)
        sys.exit(EXIT_USAGE)


config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
    help="YAML config file (see config.example.yaml).",
)


@click.group(invoke_without_command=True)
@click.version_option(__version__, prog_name="axtui")
@click.pass_context
def main(ctx: click.Context) -> None:
    """axtui: a durable hub for long-lived, multi-client agent sessions."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@main.command()
@config_option
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8494; 0 picks a free one).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where sessions are stored (default: the platform's data dir).")
def serve(config_path: Path | None, host: str | None, port: int | None,
          data_dir: Path | None) -> None:
    """Run the hub until Ctrl+C or SIGTERM."""
    _run_hub(_load(config_path, host=host, port=port, data_dir=data_dir))


@main.command()
@config_option
def up(config_path: Path | None) -> None:
    """The main job: a hub with the bundled agents on the local data dir.

    The terminal UI that opens on it is being built; until it lands, `up` runs the hub in
    the foreground and prints where clients connect.
    """
    _run_hub(_load(config_path))


# --- the terminal UI (issue 4): tui ---


# --- headless commands (issue 6): exec, replay, export, import, publish, state, sessions,
# fork, agents ---


# --- the Slack adapter (issue 5): slack ---


if __name__ == "__main__":
    main()
