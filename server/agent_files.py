"""The ACP file requests an agent may make (``fs/read_text_file``, ``fs/write_text_file``),
confined to the agent's working directory.

A path must be absolute, and one that resolves outside the directory (through ``..`` or
a symbolic link) is refused with -32602, as is a file that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from server.acp import AgentError

INVALID_PARAMS = -32602


class AgentFiles:
    """The files of one agent's working directory (``root``, absolute and resolved)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read_text_file(self, params: dict[str, Any]) -> dict[str, Any]:
        """``fs/read_text_file``: the file's text, or ``limit`` lines from ``line`` (1-based)."""
        path = self.confined(params.get("path"))
        try:
            text = path.read_text()
        except OSError as exc:
            raise AgentError(f"cannot read {path}: {exc.strerror}", INVALID_PARAMS) from None
        line, limit = params.get("line"), params.get("limit")
        if isinstance(line, int) or isinstance(limit, int):
            lines = text.splitlines(keepends=True)
            start = max(0, (line or 1) - 1)
            text = "".join(lines[start:start + limit if isinstance(limit, int) else None])
        return {"content": text}

    def write_text_file(self, params: dict[str, Any]) -> None:
        """``fs/write_text_file``: write ``content``, creating the directories it needs."""
        path = self.confined(params.get("path"))
        content = params.get("content")
        if not isinstance(content, str):
            raise AgentError("content must be a string", INVALID_PARAMS)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def confined(self, value: Any) -> Path:
        """An absolute path inside the working directory, or an error: no escaping it."""
        if not isinstance(value, str) or not os.path.isabs(value):
            raise AgentError("path must be an absolute path", INVALID_PARAMS)
        path = Path(value).resolve()
        if not path.is_relative_to(self.root):
            raise AgentError(f"{value} is outside the agent's working directory {self.root}",
                             INVALID_PARAMS)
        return path
