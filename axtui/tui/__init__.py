"""The axtui terminal UI (Textual): sessions, live conversations, replay, state, audit."""
