"""``python -m omniq_fast.dashboard``: the ``dashboard`` command on its own."""

from .command import dashboard

dashboard(prog_name="python -m omniq_fast.dashboard")
