"""Local mode's secret: who may read the data dir is admin, and nobody else.

With no ``auth.tokens`` the hub still wants a token: one generated at its first start and
kept in ``data_dir/local-token`` (mode 0600). Clients on the same machine find it by
themselves, as Jupyter's do: each running hub writes its URL to ``data_dir/local-url``
and, in a private directory of the user's (``<tmp>/axtui-<uid>/hub-<port>``), the path of
its data dir; a client that was given a loopback URL and no token looks the port up there
(or in the data dirs it knows), checks that data dir's ``local-url`` names the same hub,
and presents its secret. The secret thus never goes to a hub other than the one that
made it, and a process that cannot read the data dir (a sandboxed agent, another user)
cannot become admin.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from server.configvalues import is_loopback

TOKEN_FILE = "local-token"
URL_FILE = "local-url"


def ensure_secret(data_dir: Path) -> str:
    """The data dir's secret, made at the first start: created whole (written to a private
    temporary file, then linked into place, which never replaces one already there)."""
    existing = read_secret(data_dir)
    if existing:
        return existing
    path = data_dir / TOKEN_FILE
    temporary = data_dir / f".{TOKEN_FILE}.{secrets.token_hex(8)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(secrets.token_urlsafe(32) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another start won the race: use its
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    secret = read_secret(data_dir)
    if not secret:
        raise OSError(f"{path} is empty: remove it, and the hub makes a new one")
    return secret


def read_secret(data_dir: Path) -> str | None:
    """The secret kept in ``data_dir``, if there is one and we may read it."""
    try:
        return (data_dir / TOKEN_FILE).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def runtime_dir() -> Path:
    """The user's directory of running hubs (created private on first use)."""
    return Path(tempfile.gettempdir()) / f"axtui-{os.getuid()}"


def advertise(data_dir: Path, url: str) -> None:
    """Say that the hub at ``url`` keeps its secret in ``data_dir`` (see the docstring)."""
    _write(data_dir / URL_FILE, url)
    port = urlsplit(url).port
    with contextlib.suppress(OSError):  # clients can still be given the data dir
        make_private_dir(runtime_dir())
        _write(runtime_dir() / f"hub-{port}", str(data_dir.resolve()))


def withdraw(data_dir: Path, url: str) -> None:
    """The hub at ``url`` stops: forget what :func:`advertise` wrote, if still ours."""
    entry = runtime_dir() / f"hub-{urlsplit(url).port}"
    for path, content in ((data_dir / URL_FILE, url), (entry, str(data_dir.resolve()))):
        with contextlib.suppress(OSError):
            if path.read_text(encoding="utf-8") == content:
                path.unlink()


def secret_for(url: str, data_dirs: Iterable[Path] = ()) -> str | None:
    """The secret of the local-mode hub at ``url``, if it runs on this machine, as this
    user, and advertised itself (in the runtime dir, or in one of ``data_dirs``)."""
    parts = urlsplit(url)
    if parts.hostname is None or not is_loopback(parts.hostname) or parts.port is None:
        return None
    candidates = list(data_dirs)
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if _is_private(runtime_dir()):  # the hub on that port says where it runs: only that
            candidates = [Path((runtime_dir() / f"hub-{parts.port}").read_text("utf-8"))]
    for data_dir in candidates:
        try:
            served = urlsplit((data_dir / URL_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        if served.port == parts.port and served.hostname and is_loopback(served.hostname):
            return read_secret(data_dir)
    return None


def _write(path: Path, text: str) -> None:
    """Replace ``path`` whole with ``text`` (mode 0600)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def make_private_dir(path: Path) -> None:
    """Make ``path`` a directory only we can use; ``PermissionError`` if it is someone
    else's (planted in the shared temp dir)."""
    path.mkdir(mode=0o700, exist_ok=True)
    if not _is_private(path):
        raise PermissionError(f"{path} is not a private directory of this user")


def _is_private(path: Path) -> bool:
    """A directory of ours that nobody else may write to (not planted by another user)."""
    info = os.lstat(path)
    return (os.path.isdir(path) and not os.path.islink(path) and info.st_uid == os.getuid()
            and not info.st_mode & 0o077)
