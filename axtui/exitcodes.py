"""``ExitCode``: what every ``axtui`` command exits with.

- ``OK`` (0): success.
- ``FAILED`` (1): the turn or command failed: the hub refused (unknown session, bad SQL,
  forbidden), or the work failed.
- ``USAGE`` (2): bad usage or config, found before asking the hub: bad options, bad JSON,
  a bad file, a config or token that cannot work.
- ``UNREACHABLE`` (3): the hub cannot be reached, or refused the token.
- ``INTERRUPTED`` (130): stopped with Ctrl+C (128 + SIGINT, as shells report it).
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The exit status of an ``axtui`` command (see the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    UNREACHABLE = 3
    INTERRUPTED = 130
