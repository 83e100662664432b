"""``python -m mss``: the ``mss`` command (``mss.cli``), also where it is not installed."""

from mss.cli import main

main()
