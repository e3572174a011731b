"""Mapping ACP session/update notifications to events (no I/O)."""

from __future__ import annotations

import orjson

from server.updates import UpdateMapper, content_text


def chunk(kind: str, text: str) -> dict[str, object]:
    """An ACP chunk update."""
    return {"sessionUpdate": kind, "content": {"type": "text", "text": text}}


def test_message_assembled_from_chunks() -> None:
    """Consecutive chunks share a messageId; the whole message follows when it ends."""
    m = UpdateMapper()
    events = m.map(chunk("agent_message_chunk", "Hel")) + m.map(chunk("agent_message_chunk", "lo"))
    assert [t for t, _ in events] == ["agent.message.chunk", "agent.message.chunk"]
    assert events[0][1]["messageId"] == events[1][1]["messageId"]
    [(kind, data)] = m.finish()
    assert kind == "agent.message" and data == {"messageId": events[0][1]["messageId"],
                                                "text": "Hello"}
    assert m.finish() == []


def test_kind_change_closes_the_message() -> None:
    """A thought after a message closes the message first; each gets its own id."""
    m = UpdateMapper()
    m.map(chunk("agent_message_chunk", "a"))
    events = m.map(chunk("agent_thought_chunk", "b"))
    assert [t for t, _ in events] == ["agent.message", "agent.thought.chunk"]
    assert events[0][1]["messageId"] != events[1][1]["messageId"]


def test_tool_calls_plans_and_ignored_updates() -> None:
    """tool_call, tool_call_update and plan map to their events; others are dropped."""
    m = UpdateMapper()
    [(t1, call)] = m.map({"sessionUpdate": "tool_call", "toolCallId": "t", "title": "Read",
                          "kind": "read", "status": "pending", "rawInput": {"p": 1}})
    assert t1 == "tool.call" and call == {"toolCallId": "t", "title": "Read", "kind": "read",
                                          "status": "pending", "input": {"p": 1}}
    [(t2, update)] = m.map({"sessionUpdate": "tool_call_update", "toolCallId": "t",
                            "status": "completed"})
    assert t2 == "tool.update" and update == {"toolCallId": "t", "status": "completed"}
    entries = [{"content": "x", "priority": "high", "status": "pending"}]
    assert m.map({"sessionUpdate": "plan", "entries": entries}) == [("plan", {"entries": entries})]
    assert m.map(chunk("user_message_chunk", "replayed")) == []
    assert m.map({"sessionUpdate": "available_commands_update"}) == []


def test_content_text_skips_non_text() -> None:
    """Only text blocks contribute text."""
    assert content_text([{"type": "text", "text": "a"}, {"type": "image", "data": "…"},
                         {"type": "text", "text": "b"}]) == "ab"
    assert content_text({"type": "resource_link"}) == ""


def test_tool_update_passes_every_changed_field_through() -> None:
    """A tool_call_update keeps the fields no shape names (rawOutput, locations), in order."""
    m = UpdateMapper()
    [(kind, data)] = m.map({"sessionUpdate": "tool_call_update", "toolCallId": "t",
                            "rawInput": {"p": 1}, "rawOutput": {"ok": True},
                            "locations": [{"path": "/x"}], "title": None})
    assert kind == "tool.update"
    assert orjson.dumps(data) == (b'{"toolCallId":"t","rawOutput":{"ok":true},'
                                  b'"locations":[{"path":"/x"}],"title":null,"input":{"p":1}}')


def test_the_stored_json_of_each_event() -> None:
    """The data of chunks, messages, tool calls and plans encode exactly as they always did."""
    m = UpdateMapper()
    [(_, first)] = m.map(chunk("agent_message_chunk", "Hi"))
    mid = first["messageId"]
    assert orjson.dumps(first) == b'{"messageId":"%s","text":"Hi"}' % mid.encode()
    [(_, whole), (_, call)] = m.map({
        "sessionUpdate": "tool_call", "toolCallId": "t", "title": "Run", "kind": "execute",
        "status": "pending", "rawInput": None, "content": [{"type": "content"}]})
    assert orjson.dumps(whole) == b'{"messageId":"%s","text":"Hi"}' % mid.encode()
    assert orjson.dumps(call) == (b'{"toolCallId":"t","title":"Run","kind":"execute",'
                                  b'"status":"pending","input":null,'
                                  b'"content":[{"type":"content"}]}')
    [(_, bare)] = m.map({"sessionUpdate": "tool_call", "toolCallId": "u"})
    assert orjson.dumps(bare) == (b'{"toolCallId":"u","title":"","kind":"other",'
                                  b'"status":"pending"}')
    entries = [{"content": "x", "priority": "high", "status": "in_progress"}]
    [(_, plan)] = m.map({"sessionUpdate": "plan", "entries": entries})
    assert orjson.dumps(plan) == (b'{"entries":[{"content":"x","priority":"high",'
                                  b'"status":"in_progress"}]}')
