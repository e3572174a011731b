"""Bundled ACP agents: echo, demo, llm."""
