"""The agent's file service: fs/read_text_file and fs/write_text_file inside its cwd (no I/O
but the files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from server import agent_files
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


def test_only_regular_files_and_never_blocking(files: AgentFiles) -> None:
    """A FIFO (read or write) and a directory are refused at once, not waited on."""
    fifo = files.root / "pipe"
    os.mkfifo(fifo)
    for call in (lambda: files.read_text_file({"path": str(fifo)}),
                 lambda: files.write_text_file({"path": str(fifo), "content": "x"}),
                 lambda: files.read_text_file({"path": str(files.root / "sub")})):
        (files.root / "sub").mkdir(exist_ok=True)
        with pytest.raises(AgentError, match="not a regular file") as err:
            call()
        assert err.value.code == -32602


def test_files_over_the_cap_are_refused(files: AgentFiles,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file bigger than MAX_FILE_BYTES is neither read nor written, with the sizes said."""
    monkeypatch.setattr(agent_files, "MAX_FILE_BYTES", 10)
    big = files.root / "big.txt"
    big.write_text("x" * 11)
    with pytest.raises(AgentError, match=r"is 11 bytes; .* at most 10 bytes"):
        files.read_text_file({"path": str(big)})
    with pytest.raises(AgentError, match="is 12 bytes"):
        files.write_text_file({"path": str(files.root / "new.txt"), "content": "y" * 12})
    assert not (files.root / "new.txt").exists()


def test_a_link_inside_the_workspace_is_not_followed_either(files: AgentFiles) -> None:
    """Every component is opened without following links: even a link that points inside
    is refused (what it points to can change between two looks)."""
    (files.root / "real").mkdir()
    (files.root / "real" / "a.txt").write_text("a")
    (files.root / "alias").symlink_to(files.root / "real")
    (files.root / "file-link").symlink_to(files.root / "real" / "a.txt")
    for path in (files.root / "alias" / "a.txt", files.root / "file-link"):
        with pytest.raises(AgentError, match="outside"):
            files.read_text_file({"path": str(path)})
    with pytest.raises(AgentError, match="outside"):
        files.write_text_file({"path": str(files.root / "alias" / "b.txt"), "content": "b"})
    assert not (files.root / "real" / "b.txt").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give files away")
def test_what_the_hub_creates_belongs_to_the_agent_user(tmp_path: Path) -> None:
    """With an owner (the agent's user), new directories and files are that user's."""
    root = tmp_path / "ws"
    root.mkdir()
    files = AgentFiles(root.resolve(), owner=(65534, 65534))
    files.write_text_file({"path": str(root / "d" / "f.txt"), "content": "x"})
    assert (root / "d").stat().st_uid == 65534 and (root / "d" / "f.txt").stat().st_uid == 65534
