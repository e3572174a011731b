"""The Slack adapter: Slack threads as axtui sessions (slack_bolt, Socket Mode).

Needs the ``slack`` extra (``pip install 'axtui[slack]'``). See docs/slack.md.
"""
