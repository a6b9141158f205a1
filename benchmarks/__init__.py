"""Safelight benchmarks (``scripts/bench``): fan-out latency and throughput of the full app
against a bare uvicorn broadcast server, and memory per idle stream.  See docs/benchmarks.md.

Not part of the installed package; run from the repository root.
"""
