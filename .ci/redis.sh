#!/usr/bin/env bash
# Make sure the Redis the tests use answers on 127.0.0.1:6379 (no persistence: test data only).
# This machine kind starts it before the session; elsewhere install and start it here.
set -euo pipefail

ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if command -v redis-cli >/dev/null 2>&1 && ready; then
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  ready && exit 0  # the package's service may have started it already
fi
redis-server --daemonize yes --port 6379 --bind 127.0.0.1 --save '' --appendonly no >/dev/null
for _ in $(seq 1 50); do ready && break; sleep 0.1; done
ready || { echo "Redis did not start" >&2; exit 1; }
