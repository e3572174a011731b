"""``SlackThread``: one Slack thread as the outbox's :class:`Surface`.

Every message the adapter posts carries its :class:`Mark` as Slack message metadata
(``event_type`` ``axtui_item``), so ``conversations.replies`` with
``include_all_metadata`` reads the resume cursor back out of the thread itself.
Rate limits (HTTP 429) are retried by the web client's retry handlers, as long as Slack's
``Retry-After`` says; other errors become :class:`DeliveryError` (permanent or not).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from axtui.adapters.outbox import DeliveryError, Mark, Posted
from axtui.adapters.view import Item
from axtui.slack.render import REACTIONS, Content, render

log = logging.getLogger("axtui.slack")

MARK_TYPE = "axtui_item"
# Slack errors that the same call again will not fix the next second.
_TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout",
              "ratelimited"}
_REACTION_DONE = {"already_reacted", "no_reaction"}


def _failure(exc: Exception, what: str) -> DeliveryError:
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", 200)
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        transient = status >= 500 or status == 429 or error in _TRANSIENT
        return DeliveryError(f"Slack refused {what}: {error or f'HTTP {status}'}",
                             permanent=not transient)
    return DeliveryError(f"cannot reach Slack for {what}: {exc!r}", permanent=False)


_ERRORS = (SlackApiError, aiohttp.ClientError, TimeoutError, OSError)


class SlackThread:
    """A Slack thread (``channel``, ``thread_ts``) showing one session."""

    def __init__(self, client: AsyncWebClient, session_id: str, channel: str, thread_ts: str,
                 bot_id: str | None) -> None:
        self.client = client
        self.session_id = session_id
        self.channel = channel
        self.thread_ts = thread_ts
        self.bot_id = bot_id

    def render(self, item: Item) -> tuple[Content, str]:
        """Slack content for ``item``, and its digest."""
        return render(item, self.session_id)

    @staticmethod
    def _metadata(mark: Mark) -> dict[str, Any]:
        return {"event_type": MARK_TYPE, "event_payload": {
            "session": mark.session, "epoch": mark.epoch, "key": mark.key,
            "first": mark.first, "through": mark.through, "done": mark.done,
            "digest": mark.digest}}

    async def post(self, content: Content, mark: Mark) -> str:
        """chat.postMessage in the thread, with the mark as metadata."""
        try:
            response = await self.client.chat_postMessage(
                channel=self.channel, thread_ts=self.thread_ts, text=content["text"],
                blocks=content["blocks"], metadata=self._metadata(mark),
                unfurl_links=False, unfurl_media=False)
        except _ERRORS as exc:
            raise _failure(exc, f"posting {mark.key}") from None
        return str(response["ts"])

    async def update(self, ref: str, content: Content, mark: Mark) -> None:
        """chat.update of a posted message, content and mark."""
        try:
            await self.client.chat_update(
                channel=self.channel, ts=ref, text=content["text"],
                blocks=content["blocks"] or [], metadata=self._metadata(mark))
        except _ERRORS as exc:
            raise _failure(exc, f"editing {mark.key}") from None

    async def react(self, ref: str, reaction: str, on: bool) -> None:
        """reactions.add / reactions.remove; already there (or gone) is fine."""
        call = self.client.reactions_add if on else self.client.reactions_remove
        try:
            await call(channel=self.channel, timestamp=ref, name=REACTIONS[reaction])
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            if error not in _REACTION_DONE:
                failure = _failure(exc, f"the {reaction} reaction")
                if not failure.permanent:
                    raise failure from None
                log.warning("%s", failure)
        except _ERRORS as exc:
            raise _failure(exc, f"the {reaction} reaction") from None

    async def reply(self, text: str) -> None:
        """A plain message in the thread (errors are logged, not raised)."""
        try:
            await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts,
                                               text=text)
        except _ERRORS as exc:
            log.warning("%s", _failure(exc, "a reply"))

    async def read_marks(self) -> list[Posted]:
        """The adapter's marked messages in the thread, from conversations.replies."""
        found: list[Posted] = []
        cursor: str | None = None
        while True:
            try:
                response = await self.client.conversations_replies(
                    channel=self.channel, ts=self.thread_ts, include_all_metadata=True,
                    limit=200, cursor=cursor)
            except SlackApiError as exc:
                if exc.response.get("error") == "thread_not_found":
                    return found  # nothing posted yet
                raise _failure(exc, "reading the thread") from None
            except _ERRORS as exc:
                raise _failure(exc, "reading the thread") from None
            for message in response.get("messages") or []:
                posted = self._posted(message)
                if posted is not None:
                    found.append(posted)
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more", True):
                return found

    def _posted(self, message: dict[str, Any]) -> Posted | None:
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload")
        if metadata.get("event_type") != MARK_TYPE or not isinstance(payload, dict):
            return None
        if self.bot_id is not None and message.get("bot_id") not in (None, self.bot_id):
            return None  # another bot's message that happens to look like ours
        try:
            mark = Mark(str(payload["session"]), str(payload["epoch"]), str(payload["key"]),
                        int(payload["first"]), int(payload["through"]), bool(payload["done"]),
                        str(payload["digest"]))
        except (KeyError, TypeError, ValueError):
            return None
        return Posted(str(message["ts"]), mark)
