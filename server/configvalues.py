"""The kinds of values a config file holds, each with its check.

Every check takes the value and its key path and returns the value parsed, or raises
:class:`ValueError` whose message starts with the key (``hub.port: must be an integer
...``); :mod:`server.config` turns it into a ``ConfigError`` naming the file. Secret values
never appear in a message: a string's check names its type only.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import shlex
from collections.abc import Callable, Collection, Mapping
from typing import Any

AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{))"
)
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?", re.IGNORECASE)
_DURATION_UNITS: dict[str | None, float] = {"MS": 0.001, "S": 1, "M": 60, "H": 3600, None: 1}
_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMG]i?B|B)?", re.IGNORECASE)
_SIZE_UNITS: dict[str | None, float] = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
               "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, None: 1}
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}




# --- value parsers (raise ValueError "key: what is wrong") ------------------------------

def _scaled(value: object, pattern: re.Pattern[str], units: Mapping[str | None, float]) -> float:
    """A bare number, or a number and a unit from ``units``; NaN when it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (match := pattern.fullmatch(value.strip())):
        return float(match[1]) * units[match[2] and match[2].upper()]
    return math.nan


def parse_duration(value: object, key: str) -> float:
    """Seconds from ``30s``, ``5m``, ``1h``, ``250ms``, ``1.5s`` or a bare number of seconds."""
    seconds = _scaled(value, _DURATION, _DURATION_UNITS)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{key}: must be a non-negative duration such as 30s, 5m, 1h or 250ms,"
                         f" or a number of seconds (got {value!r})")
    return seconds


def parse_size(value: object, key: str) -> int:
    """A positive number of bytes from an integer or ``4MiB``, ``512KiB``, ``1MB``, ``100B``."""
    size = _scaled(value, _SIZE, _SIZE_UNITS)
    if not math.isfinite(size) or size < 1 or not size.is_integer():
        raise ValueError(f"{key}: must be a positive whole number of bytes, or a size such as"
                         f" 4MiB, 512KiB, 1MB or 100B (got {value!r})")
    return int(size)


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with ``${VAR}`` and ``${VAR:-default}`` replaced from ``environ``; ``$$`` is ``$``.

    As in the shell, the default is used when the variable is unset or empty. An unset
    variable without a default raises :class:`ValueError` naming the variable.
    """

    def substitute(match: re.Match[str]) -> str:
        if match["dollar"]:
            return "$"
        if match["bad"]:
            raise ValueError("malformed ${...} reference (use ${NAME} or ${NAME:-default};"
                             " write $$ for a literal $)")
        name, default = match["name"], match["default"]
        value = environ.get(name)
        if default is not None and not value:
            return default
        if value is None:
            raise ValueError(f"environment variable {name} is not set"
                             f" (set it, or write ${{{name}:-default}})")
        return value

    return _REFERENCE.sub(substitute, text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or an address in 127.0.0.0/8 or ``::1``."""
    name = host.strip().removeprefix("[").removesuffix("]")
    if name.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


# --- checks, one per kind of value --------------------------------------------------------

Check = Callable[[object, str], Any]


def kind_of(value: object) -> str:
    names = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number",
             str: "a string", list: "a list", dict: "a mapping"}
    return names.get(type(value), type(value).__name__)


def section(raw: object, key: str, known: Collection[str] | None) -> dict[str, Any]:
    """``raw`` as a mapping with string keys, all in ``known`` (any when None); null is {}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{key or 'the top level'}: must be a mapping (got {kind_of(raw)})")
    for name in raw:
        path = f"{key}.{name}" if key else str(name)
        if not isinstance(name, str):
            raise ValueError(f"{path}: keys must be strings (put it in quotes)")
        if known is not None and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]}?" if close else "known keys: " + ", ".join(known)
            raise ValueError(f"{path}: unknown key ({hint})")
    return raw


def fields(raw: object, key: str, checks: Mapping[str, Check],
            required: Collection[str] = ()) -> dict[str, Any]:
    values = section(raw, key, checks)
    for name in required:
        if values.get(name) is None:
            raise ValueError(f"{key}.{name}: required")
    return {name: checks[name](value, f"{key}.{name}") for name, value in values.items()}


def string(value: object, key: str) -> str:
    if not isinstance(value, str):  # the type only: the value may be a secret
        hint = "; put it in quotes" if isinstance(value, int | float) else ""
        raise ValueError(f"{key}: must be a string (got {kind_of(value)}{hint})")
    return value


def nonempty(value: object, key: str) -> str:
    if not string(value, key).strip():
        raise ValueError(f"{key}: must not be empty")
    return str(value)


def opt_str(value: object, key: str) -> str | None:
    return None if value is None or value == "" else string(value, key)


def integer(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{key}: must be an integer between {low} and {high} (got {value!r})")
    return value


def boolean(value: object, key: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if not isinstance(value, bool):
        raise ValueError(f"{key}: must be true or false (got {value!r})")
    return value


def choice(*choices: str) -> Check:
    def check(value: object, key: str) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"{key}: must be {' or '.join(choices)} (got {value!r})")
        return value.lower()
    return check


def ws_url(value: object, key: str) -> str:
    if not string(value, key).startswith(("ws://", "wss://")):
        raise ValueError(f"{key}: must be a ws:// or wss:// URL (got {value!r})")
    return str(value)


def command(value: object, key: str) -> tuple[str, ...]:
    try:
        words = shlex.split(value) if isinstance(value, str) else value
    except ValueError as exc:
        raise ValueError(f"{key}: cannot split the command ({exc})") from None
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ValueError(f"{key}: must be a string or a list of strings")
    if not words:
        raise ValueError(f"{key}: must not be empty")
    return tuple(words)


def event_types(value: object, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ValueError(f"{key}: must be a non-empty list of event types (globs allowed)")
    return tuple(nonempty(item, f"{key}[{index}]") for index, item in enumerate(items))


def env_vars(value: object, key: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, item in section(value, key, None).items():
        if not isinstance(item, str | int | float):
            raise ValueError(f"{key}.{name}: must be a string or a number (got {kind_of(item)})")
        env[name] = str(item).lower() if isinstance(item, bool) else str(item)
    return env


def paths(value: object, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(f"{key}: must be a list of paths")
    return tuple(nonempty(item, f"{key}[{index}]") for index, item in enumerate(items))


