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


def test_a_new_acp_message_id_starts_a_new_message() -> None:
    """Chunks with another ACP messageId are another message: two agent.message events,
    each with its own text and its own (hub-minted) id."""
    m = UpdateMapper()
    events = []
    for message_id, text in (("m1", "Let me look."), ("m1", " Done."), ("m2", "Found it.")):
        update = chunk("agent_message_chunk", text) | {"messageId": message_id}
        events += m.map(update)
    events += m.finish()
    whole = [data for kind, data in events if kind == "agent.message"]
    assert [w["text"] for w in whole] == ["Let me look. Done.", "Found it."]
    assert whole[0]["messageId"] != whole[1]["messageId"]
    assert whole[0]["messageId"] not in ("m1", "m2")
    chunk_ids = [data["messageId"] for kind, data in events if kind == "agent.message.chunk"]
    assert chunk_ids == [whole[0]["messageId"]] * 2 + [whole[1]["messageId"]]


def test_a_long_message_continues_in_parts_within_the_limit() -> None:
    """A message past max_bytes is split into parts (continuationOf, part, continued), each
    event within the limit; together they hold the whole text, in order."""
    limit = 2048
    m = UpdateMapper(max_bytes=limit)
    texts = [f"line {i} \"quoted\" \u00e9\n" * 7 for i in range(60)]  # ~10 KB, escapes too
    events = [e for t in texts for e in m.map(chunk("agent_message_chunk", t))] + m.finish()
    assert all(len(orjson.dumps(data)) <= limit for _, data in events)
    whole = [data for kind, data in events if kind == "agent.message"]
    assert len(whole) > 3
    assert "".join(w["text"] for w in whole) == "".join(texts)
    first = whole[0]["messageId"]
    assert whole[0].get("continued") is True and "continuationOf" not in whole[0]
    for n, part in enumerate(whole[1:], start=2):
        assert part["continuationOf"] == first and part["part"] == n
        assert part.get("continued", False) is (n < len(whole))
    chunks = [data for kind, data in events if kind == "agent.message.chunk"]
    assert "".join(c["text"] for c in chunks) == "".join(texts)
    for part in whole:  # the chunks of each part carry its id
        assert "".join(c["text"] for c in chunks if c["messageId"] == part["messageId"]) \
            == part["text"]


def test_one_huge_chunk_is_split_too() -> None:
    """A single chunk past the limit becomes several chunk events and message parts."""
    m = UpdateMapper(max_bytes=1024)
    text = "x" * 5000
    events = m.map(chunk("agent_thought_chunk", text)) + m.finish()
    assert all(len(orjson.dumps(data)) <= 1024 for _, data in events)
    assert "".join(d["text"] for k, d in events if k == "agent.thought") == text
    assert "".join(d["text"] for k, d in events if k == "agent.thought.chunk") == text


def test_an_oversized_tool_update_has_its_largest_fields_left_out() -> None:
    """A tool.update past the limit keeps its id and small fields; the big output is
    replaced by a note saying how much was left out."""
    m = UpdateMapper(max_bytes=1024)
    [(kind, data)] = m.map({"sessionUpdate": "tool_call_update", "toolCallId": "t",
                            "status": "completed", "rawOutput": {"log": "y" * 10_000}})
    assert kind == "tool.update" and len(orjson.dumps(data)) <= 1024
    assert data["toolCallId"] == "t" and data["status"] == "completed"
    assert data["rawOutput"].startswith("(left out by the hub: 10")
