"""A built-in model simulator that speaks the OpenAI wire format (quickstart, tests, benchmark)."""

from __future__ import annotations

from aigw.demo.app import ASGIApp, DemoApp, DemoSettings, create_demo_app

__all__ = ["ASGIApp", "DemoApp", "DemoSettings", "create_demo_app"]
