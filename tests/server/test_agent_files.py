"""The agent's file service: fs/read_text_file and fs/write_text_file inside its cwd (no I/O
but the files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.acp import AgentError
from server.agent_files import AgentFiles


@pytest.fixture
def files(tmp_path: Path) -> AgentFiles:
    """The files of a workspace ``tmp_path/ws``."""
    root = tmp_path / "ws"
    root.mkdir()
    return AgentFiles(root.resolve())


def test_write_then_read(files: AgentFiles) -> None:
    """A write creates the directories it needs; a read returns what was written."""
    path = files.root / "notes" / "a.txt"
    files.write_text_file({"path": str(path), "content": "one\ntwo\nthree\n"})
    assert files.read_text_file({"path": str(path)}) == {"content": "one\ntwo\nthree\n"}


def test_read_lines(files: AgentFiles) -> None:
    """line (1-based) and limit select lines; either alone works too."""
    path = files.root / "a.txt"
    path.write_text("one\ntwo\nthree\n")
    assert files.read_text_file({"path": str(path), "line": 2, "limit": 1}) == {
        "content": "two\n"}
    assert files.read_text_file({"path": str(path), "line": 2}) == {"content": "two\nthree\n"}
    assert files.read_text_file({"path": str(path), "limit": 1}) == {"content": "one\n"}


@pytest.mark.parametrize("path", ["relative.txt", None, 7])
def test_a_path_must_be_absolute(files: AgentFiles, path: object) -> None:
    """A relative path (or none) is refused with -32602."""
    with pytest.raises(AgentError, match="absolute") as err:
        files.read_text_file({"path": path})
    assert err.value.code == -32602


def test_no_escape_through_dot_dot_or_a_link(files: AgentFiles, tmp_path: Path) -> None:
    """A path that resolves outside the directory is refused, through .. or a symbolic link."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (files.root / "link").symlink_to(tmp_path)
    for path in (files.root / ".." / "secret.txt", files.root / "link" / "secret.txt"):
        with pytest.raises(AgentError, match="outside") as err:
            files.read_text_file({"path": str(path)})
        assert err.value.code == -32602
    with pytest.raises(AgentError, match="outside"):
        files.write_text_file({"path": str(files.root / ".." / "escape.txt"), "content": "x"})
    assert not (tmp_path / "escape.txt").exists()


def test_unreadable_file_and_bad_content(files: AgentFiles) -> None:
    """A missing file and non-text content are refused with -32602 and a clear message."""
    with pytest.raises(AgentError, match="cannot read") as err:
        files.read_text_file({"path": str(files.root / "missing.txt")})
    assert err.value.code == -32602
    with pytest.raises(AgentError, match="content must be a string"):
        files.write_text_file({"path": str(files.root / "a.txt"), "content": 5})
