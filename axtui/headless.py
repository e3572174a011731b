"""What every headless command shares: where the hub is, connecting, errors and exit codes.

A command is a coroutine returning an :class:`~axtui.exitcodes.ExitCode`; :func:`run`
turns whatever it raises into its one line on stderr, starting with ``axtui:``, and the
exit code: :class:`CommandError` its own; what the hub refused (``ProtocolError``, its
message) ``FAILED``; a hub that cannot be reached, refuses the token or drops the
connection ``UNREACHABLE``; Ctrl+C ``INTERRUPTED``. So commands raise, and catch a hub
error only to say something more specific than its message.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import click

from axtui.client import ConnectionLost, HubAuthError, HubClient, HubUnavailable
from axtui.exitcodes import ExitCode
from server.local_secret import secret_for
from server.protocol import ProtocolError


class CommandError(Exception):
    """A command cannot go on: ``message`` is shown on one line, ``code`` is the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage_error(message: str) -> CommandError:
    """Bad options or input, found before asking the hub (``USAGE``)."""
    return CommandError(message, ExitCode.USAGE)


@dataclass(frozen=True)
class Target:
    """The hub a command talks to and the token it presents."""

    url: str
    token: str | None = None


def resolve_target(config: Any, server: str | None, token: str | None) -> Target:
    """``--server`` or the config's ``client.server``; ``--token``/``AXTUI_TOKEN``, the
    config's ``client.token``, or the secret of the local-mode hub at that URL, when it
    runs on the configured data dir (or advertised its own: :mod:`server.local_secret`)."""
    url = server or config.client.server
    if not url.startswith(("ws://", "wss://")):
        raise usage_error(f"--server must be a ws:// or wss:// URL (got {url!r})")
    return Target(url, token or config.client.token or secret_for(url, [config.hub.data_dir]))


@contextlib.asynccontextmanager
async def connect(target: Target, *, reconnect: bool = False) -> AsyncIterator[HubClient]:
    """A connected :class:`HubClient`; failures become ``UNREACHABLE`` with one clear line."""
    client = HubClient(target.url, token=target.token, kind="cli", name="axtui",
                       reconnect=reconnect)
    try:
        await client.start()
    except HubAuthError as exc:
        raise CommandError(f"{exc} (check --token or AXTUI_TOKEN)",
                           ExitCode.UNREACHABLE) from None
    except HubUnavailable as exc:
        raise CommandError(f"{exc} (is a hub running? start one with `axtui up` (hub and"
                           " TUI) or `axtui serve`)", ExitCode.UNREACHABLE) from None
    try:
        yield client
    finally:
        await client.close()


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; print its error, if any, and return the exit code."""
    try:
        return asyncio.run(main)
    except CommandError as exc:
        click.echo(f"axtui: {exc.message}", err=True)
        return exc.code
    except ProtocolError as exc:
        click.echo(f"axtui: {exc.message.rstrip('.')}", err=True)
        return ExitCode.FAILED
    except HubAuthError as exc:
        click.echo(f"axtui: {exc}", err=True)
        return ExitCode.UNREACHABLE
    except (HubUnavailable, ConnectionLost) as exc:
        click.echo(f"axtui: lost the hub: {exc}", err=True)
        return ExitCode.UNREACHABLE
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("axtui: interrupted", err=True)
        return ExitCode.INTERRUPTED


def finish(main: Coroutine[Any, Any, int]) -> None:
    """Run a command's coroutine and exit with its code."""
    sys.exit(run(main))


async def history(client: HubClient, session_id: str, after_seq: int = 0,
                  to_seq: int | None = None, types: list[str] | None = None,
                  ) -> AsyncIterator[dict[str, Any]]:
    """Stored events after ``after_seq`` (up to ``to_seq``), page by page."""
    while to_seq is None or after_seq < to_seq:
        params: dict[str, Any] = {"afterSeq": after_seq, "limit": 5000}
        if to_seq is not None:
            params["beforeSeq"] = to_seq + 1
        if types:
            params["types"] = types
        page = await client.history(session_id, **params)
        if not page["events"]:
            return
        for event in page["events"]:
            yield event
        after_seq = page["events"][-1]["seq"]
