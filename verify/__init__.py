"""Proofs the system keeps its promises: cross-mode parity, fault injection and bad-input fuzzing.

Each module is both a command (`python -m verify.<name>`, behind a Makefile target that
prints a table) and the code its integration test runs with a small budget. What they
share with the tests and benchmarks (topics, flows, servers, workspaces, the report, the
brute-force reference) lives in ``harness``.
"""
