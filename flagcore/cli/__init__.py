"""The ``flagcore`` command."""

from flagcore.cli.main import main

__all__ = ["main"]
