"""Counters for limits (tokens per minute, quotas, call rates) and the stores that keep them."""
