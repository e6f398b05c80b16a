"""The admin API: products, subscriptions and their audit log over HTTP, on a listener of its
own (never under the gateway's API routes), behind a bearer token."""

from __future__ import annotations

from aigw.admin.app import AdminServer

__all__ = ["AdminServer"]
