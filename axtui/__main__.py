"""``python -m axtui``."""

from axtui.cli import main

main()
