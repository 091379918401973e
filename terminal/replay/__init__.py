"""Replay for QA: YAML scenarios with expectations, their runner, JUnit reports, recorded sessions and raw frame replay.

docs/replay.md is the format and the commands. The terminal end drives a
host through real links; what needs the host's side (an embedded host, its
journal) is handed in by the caller as a `Target`, so this package never
imports the acquirer.
"""
