"""An embedded hub for ``axtui exec`` without ``--server``: in this process, on the local data
dir, on an ephemeral loopback port, reached through :class:`HubClient` like any other hub.

It runs in local mode (no tokens; loopback only) whatever ``auth.tokens`` says, since it
lives only as long as the command. Its log goes to ``data_dir/logs/hub.log``, not to the
terminal. A hub (``axtui up`` or ``axtui serve``) already running on the data dir holds its
lock: :func:`running_hub` then finds it (its advertised URL and secret), so the command
can use that hub instead.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

from axtui.exitcodes import ExitCode
from axtui.headless import CommandError, Target, usage_error
from server.catalog import DataDirLocked
from server.config import Config
from server.local_secret import URL_FILE, secret_for
from server.redact import protect_logs
from server.runner import log_formatter
from server.wiring import build_hub


@contextlib.contextmanager
def _log_to_file(config: Config) -> Iterator[None]:
    """The hub's log into ``data_dir/logs/hub.log`` only, so the terminal shows nothing but
    the command's own output; the logger is put back as it was afterwards."""
    logs = config.hub.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("axtui")
    saved = (root.handlers[:], root.propagate, root.level)
    handler = logging.FileHandler(logs / "hub.log")
    handler.setFormatter(log_formatter())
    protect_logs(handlers=[handler])
    root.setLevel(getattr(logging, config.hub.log_level.upper(), logging.INFO))
    root.handlers[:], root.propagate = [handler], False
    try:
        yield
    finally:
        root.handlers[:], root.propagate = saved[0], saved[1]
        root.setLevel(saved[2])
        handler.close()


class HubAlreadyRunning(CommandError):
    """Another hub holds the data dir's lock."""


def running_hub(config: Config) -> Target | None:
    """The local-mode hub that runs on the data dir (``axtui up``, ``axtui serve``) as it
    advertised itself there, with its secret; None if it did not (a token-mode hub)."""
    data_dir = config.hub.data_dir
    try:
        url = (data_dir / URL_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    token = secret_for(url, [data_dir])
    return Target(url, token) if token else None


@contextlib.asynccontextmanager
async def embedded_hub(config: Config, port: int = 0,
                       http_port: int | None = None) -> AsyncIterator[str]:
    """Run a hub for the duration of the block (on ``port``, by default a free one, and the
    HTTP API on ``http_port``, by default none); yields its websocket URL."""
    config = replace(config, tokens=(),
                     hub=replace(config.hub, host="127.0.0.1", port=port, http_port=http_port))
    logging_to_file = _log_to_file(config)
    try:
        logging_to_file.__enter__()
    except OSError as exc:
        raise usage_error(f"cannot use the data dir {config.hub.data_dir}: {exc}") from None
    try:
        hub = build_hub(config)
        try:
            await hub.start()
        except DataDirLocked as exc:
            raise HubAlreadyRunning(
                f"{str(exc).split(';')[0]} (axtui up or axtui serve): talk to that hub with"
                f" --server {config.client.server}", ExitCode.USAGE
            ) from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise CommandError(f"{in_use(exc)}: pass another --port or --http-port (0"
                                   " picks a free one)", ExitCode.USAGE) from None
            raise CommandError(f"cannot start the embedded hub: {exc}", ExitCode.USAGE) from None
        try:
            yield hub.url
        finally:
            await hub.stop()
    finally:
        logging_to_file.__exit__(None, None, None)


def in_use(exc: OSError) -> str:
    """Which address an EADDRINUSE was about, in a few words."""
    found = re.search(r"\('?([^',]+)'?, (\d+)\)", str(exc))
    return f"port {found[2]} is already in use on {found[1]}" if found else "a port is in use"
