"""The TUI's screens: main (sessions and a conversation), replay, state, inspector, help."""
