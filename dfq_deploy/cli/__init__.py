"""Command-line interface: thin click commands over the Python API (one module per command)."""

from .main import main

__all__ = ["main"]
