"""What any chat-bot adapter needs, with no chat platform in it.

- :mod:`~axtui.adapters.threads`: a thread's session id, and the session found or created
  (the thread-to-session map lives in the hub, in session ids and metadata);
- :mod:`~axtui.adapters.view`: a session's events as chat items and reactions (no I/O);
- :mod:`~axtui.adapters.outbox`: posting and editing items (throttled, coalesced), with the
  resume cursor kept in the posted messages' marks;
- :mod:`~axtui.adapters.bridge`: one task per session tying the hub to a thread.

The Slack adapter (:mod:`axtui.slack`) is these plus slack_bolt.
"""
