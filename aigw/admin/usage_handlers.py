"""`GET /usage/report`: the cross-charging report from the running gateway's usage ledger,
as JSON (the dashboard's shape, the default) or CSV."""

from __future__ import annotations

import logging

from aiohttp import web

from aigw.admin.handlers import RUNTIME
from aigw.ledger.formats import to_csv, to_document
from aigw.ledger.query import COLUMN_KEYS
from aigw.ledger.report import ReportError, parse_spec, usage_report
from aigw.ledger.schema import LedgerUnavailable
from aigw.ledger.store import LedgerStore
from aigw.subscriptions.service import ServiceError

log = logging.getLogger("aigw.admin")

# Besides these, every non-time group-by name filters: `?subscription=team-a&status=429`.
_PARAMETERS = frozenset({"from", "to", "group-by", "format"})


def usage_routes() -> list[web.RouteDef]:
    return [web.get("/usage/report", usage_report_handler, allow_head=False)]


async def usage_report_handler(request: web.Request) -> web.Response:
    query = request.query
    for name in query:
        if name not in _PARAMETERS and name not in COLUMN_KEYS:
            raise ServiceError(400, f"unknown query parameter '{name[:64]}'")
        if name != "group-by" and len(query.getall(name)) > 1:
            raise ServiceError(400, f"query parameter '{name}' is given more than once")
    form = query.get("format", "json")
    if form not in ("json", "csv"):
        raise ServiceError(400, "format must be 'json' or 'csv'")
    filters = {name: value for name, value in query.items() if name in COLUMN_KEYS}
    try:
        spec = parse_spec(query.get("from"), query.get("to"), query.getall("group-by", []), filters)
        store = _store(request)
        await store.open()
        found = await usage_report(store, spec)
    except ReportError as exc:
        raise ServiceError(400, str(exc)) from None
    except LedgerUnavailable as exc:
        log.error("usage report: %s", exc)
        raise ServiceError(503, "usage ledger unavailable; try again later") from None
    if form == "csv":
        return web.Response(text=to_csv(found), content_type="text/csv", charset="utf-8")
    return web.json_response(to_document(found))


def _store(request: web.Request) -> LedgerStore:
    ledger = request[RUNTIME].services.ledger
    if ledger is None:
        raise ServiceError(503, "the usage ledger is off (usage.ledger.enabled is false)")
    return ledger.store
