"""axtui: clients of the hub (the command line, the client library, the TUI, adapters)."""

__version__ = "0.1.0"
