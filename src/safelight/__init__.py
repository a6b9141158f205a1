"""Safelight: watch long-running image generations develop live."""

__version__ = "0.1.0"
