"""What every headless command shares: where the hub is, connecting, errors and exit codes.

Exit codes (as in the design): 0 success, 1 the turn or command failed (the hub refused:
unknown session, bad SQL, forbidden; or the work failed), 2 bad usage or config (found
before asking the hub: bad options, bad JSON, a bad file), 3 cannot reach or
authenticate with the hub. 130 when interrupted with Ctrl+C. Every error is one line on
stderr starting with ``axtui:``.
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
from server.protocol import ProtocolError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class CommandError(Exception):
    """A command cannot go on: ``message`` is shown on one line, ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def usage_error(message: str) -> CommandError:
    """Bad options or input, found before asking the hub (exit 2)."""
    return CommandError(message, EXIT_USAGE)


@dataclass(frozen=True)
class Target:
    """The hub a command talks to and the token it presents."""

    url: str
    token: str | None = None


def resolve_target(config: Any, server: str | None, token: str | None) -> Target:
    """``--server`` or the config's ``client.server``; ``--token``/``AXTUI_TOKEN`` or the
    config's ``client.token``."""
    url = server or config.client.server
    if not url.startswith(("ws://", "wss://")):
        raise usage_error(f"--server must be a ws:// or wss:// URL (got {url!r})")
    return Target(url, token or config.client.token)


@contextlib.asynccontextmanager
async def connect(target: Target, *, reconnect: bool = False) -> AsyncIterator[HubClient]:
    """A connected :class:`HubClient`; failures become exit 3 with one clear line."""
    client = HubClient(target.url, token=target.token, kind="cli", name="axtui",
                       reconnect=reconnect)
    try:
        await client.start()
    except HubAuthError as exc:
        raise CommandError(f"{exc} (check --token or AXTUI_TOKEN)", EXIT_UNREACHABLE) from None
    except HubUnavailable as exc:
        raise CommandError(str(exc), EXIT_UNREACHABLE) from None
    try:
        yield client
    finally:
        await client.close()


def hub_error(exc: ProtocolError) -> CommandError:
    """The one-line error for what the hub refused."""
    return CommandError(exc.message.rstrip("."), EXIT_FAILED)


def run(main: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine; print its error, if any, and return the exit code."""
    try:
        return asyncio.run(main)
    except CommandError as exc:
        click.echo(f"axtui: {exc.message}", err=True)
        return exc.code
    except ProtocolError as exc:
        click.echo(f"axtui: {hub_error(exc).message}", err=True)
        return EXIT_FAILED
    except HubAuthError as exc:
        click.echo(f"axtui: {exc}", err=True)
        return EXIT_UNREACHABLE
    except (HubUnavailable, ConnectionLost) as exc:
        click.echo(f"axtui: lost the hub: {exc}", err=True)
        return EXIT_UNREACHABLE
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("axtui: interrupted", err=True)
        return EXIT_INTERRUPTED


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
