"""Benchmark harness for aigw: static nginx backend, targets under test, wrk runs, report."""
