"""Telemetry of finished requests: the record, the sink interfaces, event names."""
