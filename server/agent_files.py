"""The ACP file requests an agent may make (``fs/read_text_file``, ``fs/write_text_file``),
confined to the agent's working directory.

A path must be absolute and lie inside the directory. It is opened one component at a
time, each relative to the directory opened before it (the working directory first) and
with ``O_NOFOLLOW``: a symbolic link anywhere on the way is refused, and so is ``..``
that leads out, with -32602. Nothing is resolved first and opened after, so an agent that
swaps a directory for a link meanwhile gains nothing. Only regular files are read or
written (a FIFO, a device or a socket is refused without blocking: it is opened with
``O_NONBLOCK`` and checked with ``fstat``), of at most :data:`MAX_FILE_BYTES`.

These functions block (they touch the disk): the hub runs them in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import Any

from server.acp import AgentError

INVALID_PARAMS = -32602
MAX_FILE_BYTES = 16 * 1024 * 1024  # the largest file an agent may read or write
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class AgentFiles:
    """The files of one agent's working directory (``root``, absolute and resolved).

    ``owner`` (uid, gid): who the agent runs as, when not the hub's user; the directories
    and files the hub creates for it become its own, so it can change them too.
    """

    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner

    def read_text_file(self, params: dict[str, Any]) -> dict[str, Any]:
        """``fs/read_text_file``: the file's text, or ``limit`` lines from ``line`` (1-based)."""
        value, parts = self._parts(params.get("path"))
        fd = self._open(value, parts, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size > MAX_FILE_BYTES:
                raise _too_big(value, size)
            data = os.read(fd, MAX_FILE_BYTES + 1)
            while len(data) <= MAX_FILE_BYTES and (more := os.read(fd, MAX_FILE_BYTES)):
                data += more  # (a file growing while read is cut at the limit)
        except OSError as exc:
            raise AgentError(f"cannot read {value}: {exc.strerror}", INVALID_PARAMS) from None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_BYTES:
            raise _too_big(value, len(data))
        text = data.decode(errors="replace")
        line, limit = params.get("line"), params.get("limit")
        if isinstance(line, int) or isinstance(limit, int):
            lines = text.splitlines(keepends=True)
            start = max(0, (line or 1) - 1)
            text = "".join(lines[start:start + limit if isinstance(limit, int) else None])
        return {"content": text}

    def write_text_file(self, params: dict[str, Any]) -> None:
        """``fs/write_text_file``: write ``content``, creating the directories it needs."""
        value, parts = self._parts(params.get("path"))
        content = params.get("content")
        if not isinstance(content, str):
            raise AgentError("content must be a string", INVALID_PARAMS)
        data = content.encode()
        if len(data) > MAX_FILE_BYTES:
            raise _too_big(value, len(data))
        fd = self._open(value, parts, os.O_WRONLY | os.O_CREAT, create_dirs=True)
        try:
            os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise AgentError(f"cannot write {value}: {exc.strerror}", INVALID_PARAMS) from None
        finally:
            os.close(fd)

    def _parts(self, value: Any) -> tuple[str, list[str]]:
        """The components of ``value`` below the root, ``..`` folded lexically."""
        if not isinstance(value, str) or not os.path.isabs(value) or "\0" in value:
            raise AgentError("path must be an absolute path", INVALID_PARAMS)
        path = Path(os.path.normpath(value))
        if not path.is_relative_to(self.root) or path == self.root:
            raise _outside(value, self.root)
        return value, list(path.relative_to(self.root).parts)

    def _open(self, value: str, parts: list[str], flags: int, *,
              create_dirs: bool = False) -> int:
        """Open ``parts`` below the root, one component at a time; a regular file's fd."""
        try:
            fd = os.open(self.root, _DIR_FLAGS)
        except OSError as exc:
            raise AgentError(f"cannot open the working directory {self.root}: {exc.strerror}",
                             INVALID_PARAMS) from None
        try:
            for name in parts[:-1]:
                child = self._next_dir(fd, name, value, create_dirs)
                os.close(fd)
                fd = child
            return self._open_file(fd, parts[-1], value, flags)
        finally:
            os.close(fd)

    def _next_dir(self, fd: int, name: str, value: str, create: bool) -> int:
        """The directory ``name`` in ``fd``; a link is refused."""
        try:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened below
                    os.mkdir(name, 0o755, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                if self.owner is not None:
                    os.fchown(child, *self.owner)
        except OSError as exc:
            raise _refused(value, self.root, exc, _is_link(fd, name), "open") from None
        return child

    def _open_file(self, fd: int, name: str, value: str, flags: int) -> int:
        try:
            created = False
            try:
                file = os.open(name, flags & ~os.O_CREAT | _FILE_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not flags & os.O_CREAT:
                    raise
                file = os.open(name, flags | os.O_EXCL | _FILE_FLAGS, 0o644, dir_fd=fd)
                created = True
        except OSError as exc:
            verb = "write" if flags & os.O_WRONLY else "read"
            raise _refused(value, self.root, exc, _is_link(fd, name), verb) from None
        info = os.fstat(file)
        if not stat.S_ISREG(info.st_mode):
            os.close(file)
            raise AgentError(f"{value} is not a regular file", INVALID_PARAMS)
        if created and self.owner is not None:
            os.fchown(file, *self.owner)
        return file


def _outside(value: str, root: Path) -> AgentError:
    return AgentError(f"{value} is outside the agent's working directory {root}"
                      " (symbolic links are not followed)", INVALID_PARAMS)


def _is_link(fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _refused(value: str, root: Path, exc: OSError, link: bool, verb: str) -> AgentError:
    """The error for a component that could not be opened; a symbolic link (ELOOP, or
    ENOTDIR when a directory was wanted) may lead anywhere, so it is said to lead out."""
    if link or exc.errno == errno.ELOOP:
        return _outside(value, root)
    if exc.errno == errno.ENXIO:  # a FIFO opened to write with no reader
        return AgentError(f"{value} is not a regular file", INVALID_PARAMS)
    return AgentError(f"cannot {verb} {value}: {exc.strerror}", INVALID_PARAMS)


def _too_big(value: str, size: int) -> AgentError:
    return AgentError(f"{value} is {size} bytes; the hub reads and writes files of at most"
                      f" {MAX_FILE_BYTES} bytes for an agent", INVALID_PARAMS)
