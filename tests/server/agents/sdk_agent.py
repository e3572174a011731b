"""A stand-alone ACP agent written only against the ACP SDK's public API (no axtui code).

It plays the part of a third-party agent in tests: it counts the words of each prompt and
answers ``N words: <the prompt in capitals>``, streamed in two chunks. Run it as a script.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from acp import PROTOCOL_VERSION, run_agent
from acp.helpers import update_agent_message_text
from acp.interfaces import Client
from acp.schema import (
    AgentCapabilities,
    Implementation,
    InitializeResponse,
    NewSessionResponse,
    PromptResponse,
    TextContentBlock,
)


class WordCounter:
    """The agent: every method the client calls, duck-typed."""

    def __init__(self) -> None:
        self.client: Client | None = None

    def on_connect(self, conn: Client) -> None:
        """Keep the connection to the client."""
        self.client = conn

    async def initialize(self, protocol_version: int, **kwargs: Any) -> InitializeResponse:
        """No optional capabilities."""
        return InitializeResponse(
            protocol_version=PROTOCOL_VERSION, agent_capabilities=AgentCapabilities(),
            agent_info=Implementation(name="word-counter", version="1.0"),
        )

    async def new_session(self, cwd: str, mcp_servers: list[Any] | None = None,
                          **kwargs: Any) -> NewSessionResponse:
        """Sessions hold nothing."""
        return NewSessionResponse(session_id=uuid.uuid4().hex)

    async def prompt(self, session_id: str, prompt: list[Any], **kwargs: Any) -> PromptResponse:
        """Count the words, answer in two chunks."""
        assert self.client is not None
        text = " ".join(b.text for b in prompt if isinstance(b, TextContentBlock))
        for piece in (f"{len(text.split())} words: ", text.upper()):
            await self.client.session_update(session_id=session_id,
                                             update=update_agent_message_text(piece))
        return PromptResponse(stop_reason="end_turn")


if __name__ == "__main__":
    asyncio.run(run_agent(WordCounter()))
