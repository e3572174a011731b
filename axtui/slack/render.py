"""How items look in Slack: mrkdwn text, and Block Kit for permission cards (no I/O)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from axtui.adapters.view import DONE, FAILED, SUSPENDED, WORKING, Item

REACTIONS = {WORKING: "hourglass_flowing_sand", DONE: "white_check_mark",
             SUSPENDED: "zzz", FAILED: "x"}
PERMISSION_ACTION = "axtui_permission"  # action_id prefix of the permission buttons
_TOOL_STATUS = {"pending": ":hourglass_flowing_sand:", "in_progress": ":hourglass_flowing_sand:",
                "completed": ":white_check_mark:", "failed": ":x:"}
_PLAN_STATUS = {"pending": ":white_large_square:", "in_progress": ":arrow_forward:",
                "completed": ":white_check_mark:"}
_INFO = ":information_source:"
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+)$", re.MULTILINE)

Content = dict[str, Any]  # {"text": str, "blocks": list | None}


def escape(text: str) -> str:
    """Text safe for Slack: ``&``, ``<`` and ``>`` escaped as Slack requires."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mrkdwn(markdown: str) -> str:
    """Common Markdown (bold, links, headings) as Slack mrkdwn, escaped."""
    text = _HEADING.sub(r"*\1*", escape(markdown))
    text = _BOLD.sub(r"*\1*", text)
    return _LINK.sub(r"<\2|\1>", text)


def quote(text: str) -> str:
    """``text`` as a Slack block quote."""
    return "\n".join(f">{line}" for line in escape(text).split("\n"))


def render(item: Item, session_id: str) -> tuple[Content, str]:
    """The Slack content of ``item`` (of session ``session_id``) and a digest of it."""
    body = {**item.body, "session": session_id} if item.kind == "permission" else item.body
    content = _RENDER[item.kind](body)
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return content, digest


def _user(body: dict[str, Any]) -> Content:
    head = f"*{escape(body['name'])}* via {escape(body['client'])}:"
    return {"text": f"{head}\n{quote(body['text'])}", "blocks": None}


def _agent(body: dict[str, Any]) -> Content:
    return {"text": mrkdwn(body["text"]) or "…", "blocks": None}


def _status(body: dict[str, Any]) -> Content:
    lines = [f"{_TOOL_STATUS.get(t['status'], ':small_blue_diamond:')}"
             f" {escape(t['title'] or t['kind'])} _({escape(t['status'])})_"
             for t in body["tools"]]
    if body["plan"]:
        steps = " · ".join(f"{_PLAN_STATUS.get(e['status'], ':white_large_square:')}"
                           f" {escape(e['content'])}" for e in body["plan"])
        lines.insert(0, f":clipboard: {steps}")
    return {"text": "\n".join(lines) or "…", "blocks": None}


def _permission(body: dict[str, Any]) -> Content:
    title = escape(body["title"] or body["kind"])
    ask = f":closed_lock_with_key: *Permission requested:* {title}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": ask}}]
    answer = body["answer"]
    if answer is None:
        blocks.append({"type": "actions", "block_id": f"perm:{body['requestId']}"[:255],
                       "elements": [_button(body["session"], body["requestId"], option)
                                    for option in body["options"]]})
        return {"text": f"Permission requested: {title}", "blocks": blocks}
    by_hub = answer["client"] in ("hub", "?")
    by = "" if by_hub else f"answered by {escape(answer['name'])} via {escape(answer['client'])}"
    if answer["optionId"] is None:
        line = f"*Cancelled*{', ' + by if by else ''}"
    else:
        line = f"*{escape(str(answer['option']))}*, {by or 'answered by the hub'}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": line}]})
    return {"text": f"Permission requested: {title} ({line})", "blocks": blocks}


def _button(session_id: str, request_id: str, option: dict[str, str]) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button", "text": {"type": "plain_text", "text": option["name"][:75]},
        "action_id": f"{PERMISSION_ACTION}:{option['optionId']}"[:255],
        "value": json.dumps({"session": session_id, "requestId": request_id,
                             "optionId": option["optionId"]}),
    }
    if option["kind"].startswith("allow"):
        button["style"] = "primary"
    elif option["kind"].startswith("reject"):
        button["style"] = "danger"
    return button


def _failure(body: dict[str, Any]) -> Content:
    message = f": {escape(body['message'])}" if body["message"] else ""
    reason = body["reason"]
    head = reason if " " in reason else f"The turn failed ({reason})"
    return {"text": f":warning: {escape(head[0].upper() + head[1:])}{message}", "blocks": None}


def _notice(body: dict[str, Any]) -> Content:
    if "stopReason" in body:
        stop = body["stopReason"]
        text = "The turn was cancelled." if stop == "cancelled" else f"The agent stopped: {stop}."
        return {"text": f"{_INFO} {escape(text)}", "blocks": None}
    data = json.dumps(body["data"], ensure_ascii=False)
    data = data if len(data) <= 300 else data[:299] + "…"
    return {"text": f"{_INFO} `{escape(body['type'])}` from *{escape(body['name'])}* via"
                    f" {escape(body['client'])}: `{escape(data)}`", "blocks": None}


_RENDER = {"user": _user, "agent": _agent, "status": _status, "permission": _permission,
           "failure": _failure, "notice": _notice}
