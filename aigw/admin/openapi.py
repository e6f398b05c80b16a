"""The admin API described as an OpenAPI 3.1 document, written by hand next to the handlers.

Small helpers keep the repeated parts (error answers, parameters, lists) short; the document
is built once at import and served as is.
"""

from __future__ import annotations

from typing import Any

from aigw.subscriptions.model import STATES

_STATES = list(STATES)
_SCOPE_EXAMPLES = ["/products/starter", "/apis/chat", "/apis"]
_NULLABLE_STRING = {"type": ["string", "null"]}
_DATE = {"type": ["string", "null"], "format": "date-time"}
_DATE_TIME = {"type": "string", "format": "date-time"}
_BREAKER_STATES = ["closed", "open", "half-open"]
_REASON = {
    "enum": ["circuit-breaker", "shared", "health-check", None],
    "description": "Why it is not closed: its own rules, another replica's trip, or probes",
}
_ERRORS = {
    400: "Invalid request: malformed JSON, an unknown field, a wrong type or value",
    401: "Missing or invalid admin token",
    404: "Not found",
    409: "Conflict: a duplicate id, or a change the subscription's state forbids",
    413: "Request body larger than 64 KiB",
    503: "Subscription store unavailable",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    ok: tuple[int, str],
    *errors: int,
    body: str | None = None,
    body_required: bool = True,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses = {str(ok[0]): _json(_ref(ok[1]), "Success")}
    for status in sorted({400, 401, *errors}):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": _ref(body)}},
        }
    return operation


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _list(item: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "value": {"type": "array", "items": _ref(item)},
            "count": {"type": "integer"},
        },
        "required": ["value", "count"],
    }


def _object(properties: dict[str, Any], *required: str, closed: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if closed:  # request bodies: unknown fields are refused
        schema["additionalProperties"] = False
    return schema


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_LIMIT = _query(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Newest first"
)

_GROUP_KEYS = (
    *("subscription", "product", "user", "model", "deployment", "api", "operation"),
    *("backend", "reason", "status", "day", "hour"),
)
_TOTALS = "One per currency; the rows of any grouping add up to them exactly"
_USAGE_SUMS: dict[str, Any] = {
    "requests": {"type": "integer"},
    "errors": {"type": "integer", "description": "Status 400 or above"},
    **{
        name: {"type": "integer"}
        for name in (
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "reasoning_tokens",
            "total_tokens",
        )
    },
    "cost": {
        "type": ["string", "null"],
        "description": "Exact decimal (up to 9 decimals); null when unpriced",
        "examples": ["0.000123"],
    },
    "currency": {"type": ["string", "null"], "description": "ISO 4217; null: unpriced"},
}

_SCHEMAS: dict[str, Any] = {
    "Error": _object(
        {"statusCode": {"type": "integer"}, "message": {"type": "string"}}, "statusCode", "message"
    ),
    "Product": _object(
        {
            "id": {"type": "string"},
            "displayName": {"type": "string"},
            "description": _NULLABLE_STRING,
            "state": {"enum": ["published", "not-published"]},
            "subscriptionRequired": {"type": "boolean"},
            "apis": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "ProductList": _list("Product"),
    "Subscription": _object(
        {
            "id": {"type": "string"},
            "displayName": {"type": "string"},
            "scope": {"type": "string", "examples": _SCOPE_EXAMPLES},
            "state": {"enum": _STATES, "description": "As effective now: expired when past due"},
            "storedState": {"enum": _STATES},
            "ownerId": _NULLABLE_STRING,
            "expirationDate": _DATE,
            "createdDate": {"type": "string", "format": "date-time"},
            "updatedDate": {"type": "string", "format": "date-time"},
            "stateComment": _NULLABLE_STRING,
        }
    ),
    "SubscriptionList": _list("Subscription"),
    "SubscriptionWithKeys": {
        "description": "Keys appear only in the answer that created or regenerated them.",
        "allOf": [
            _ref("Subscription"),
            _object({"primaryKey": {"type": "string"}, "secondaryKey": {"type": "string"}}),
        ],
    },
    "AuditEntry": _object(
        {
            "at": {"type": "string", "format": "date-time"},
            "actor": {"type": "string", "examples": ["admin-api@127.0.0.1 (alice)", "cli:bob"]},
            "action": {"type": "string"},
            "subscriptionId": {"type": "string"},
            "details": {"type": "object"},
        }
    ),
    "AuditList": _list("AuditEntry"),
    "CreateSubscription": _object(
        {
            "displayName": {"type": "string", "maxLength": 200},
            "scope": {"type": "string", "examples": _SCOPE_EXAMPLES},
            "product": {"type": "string", "description": "Short for scope /products/{product}"},
            "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$"},
            "ownerId": {"type": "string"},
            "expirationDate": {"type": "string", "format": "date-time"},
            "state": {"enum": ["active", "submitted"], "default": "active"},
        },
        "displayName",
        closed=True,
    ),
    "UpdateSubscription": _object(
        {
            "displayName": {"type": "string", "maxLength": 200},
            "ownerId": _NULLABLE_STRING,
            "expirationDate": _DATE,
            "state": {"enum": _STATES},
            "stateComment": _NULLABLE_STRING,
        },
        closed=True,
    ),
    "StateChange": _object({"comment": _NULLABLE_STRING}, closed=True),
    "Backend": {
        "description": "Live state in this gateway process (breakers are per process; with "
        "`circuit-breaker.shared` they also follow other replicas' trips). A single backend "
        "has `url`, counters, `breaker` (null without rules), `shared` and `healthCheck` "
        "(null when not configured); a pool has `members`.",
        **_object(
            {
                "id": {"type": "string"},
                "type": {"enum": ["http", "demo", "pool"]},
                "url": {"type": "string"},
                "state": {"enum": _BREAKER_STATES},
                "reason": _REASON,
                "inFlight": {"type": "integer", "description": "Sent and not yet relayed"},
                "requests": {"type": "integer", "description": "Answers judged since start"},
                "failures": {"type": "integer", "description": "429, 5xx or no answer"},
                "lastFailure": {
                    "type": ["object", "null"],
                    "properties": {"at": _DATE_TIME, "cause": {"type": "string"}},
                },
                "breaker": {"oneOf": [_ref("Breaker"), {"type": "null"}]},
                "shared": {"oneOf": [_ref("SharedBreaker"), {"type": "null"}]},
                "healthCheck": {"oneOf": [_ref("HealthCheck"), {"type": "null"}]},
                "available": {"type": "boolean", "description": "Pool: a member can send"},
                "maxAttempts": {"type": "integer"},
                "firstByteTimeout": {"type": ["number", "null"]},
                "sessionAffinity": {**_NULLABLE_STRING, "description": "The cookie name"},
                "members": {"type": "array", "items": _ref("PoolMember")},
            },
            "id",
            "type",
        ),
    },
    "BackendList": _list("Backend"),
    "Breaker": _object(
        {
            "state": {"enum": _BREAKER_STATES},
            "reason": _REASON,
            "since": _DATE_TIME,
            "until": {
                **_DATE,
                "description": "While open: when it half-opens (null while probes hold it)",
            },
            "lastTrip": {
                "type": ["object", "null"],
                "properties": {
                    "rule": {"type": "string"},
                    "cause": {"type": "string", "examples": ["status 429", "timeout"]},
                    "threshold": {"type": "string"},
                    "at": _DATE_TIME,
                    "openSeconds": {"type": "number"},
                    "retryAfter": {
                        "type": ["number", "null"],
                        "description": "The wait the backend asked for, when the rule accepts it",
                    },
                    "origin": {
                        **_NULLABLE_STRING,
                        "description": "The replica whose trip was adopted; null: tripped here",
                    },
                },
            },
            "rules": {
                "type": "array",
                "items": _object(
                    {
                        "name": {"type": "string"},
                        "threshold": {"type": "string"},
                        "recentFailures": {"type": "integer"},
                        "recentRequests": {"type": "integer", "description": "Percentage rules"},
                    }
                ),
            },
            "trials": _object(
                {
                    "allowed": {"type": "integer"},
                    "started": {"type": "integer"},
                    "succeeded": {"type": "integer"},
                },
            ),
        },
        "state",
        "since",
    ),
    "PoolMember": _object(
        {
            "backend": {"type": "string"},
            "priority": {"type": "integer"},
            "weight": {"type": "integer"},
            "state": {"enum": _BREAKER_STATES},
            "reason": _REASON,
            "available": {"type": "boolean"},
            "availableInSeconds": {"type": "number"},
            "inFlight": {"type": "integer"},
        }
    ),
    "SharedBreaker": _object(
        {
            "key": {"type": "string", "description": "The Redis key of the backend's record"},
            "sync": {"enum": ["starting", "ok", "unavailable"]},
            "lastSync": {**_DATE, "description": "The last round that reached Redis"},
            "pollInterval": {"type": "number"},
            "replica": {"type": "string", "description": "How this process signs its records"},
            "record": {
                "type": ["object", "null"],
                "description": "The record last read: open until a time, or closed",
                "properties": {
                    "state": {"enum": ["open", "closed"]},
                    "at": _DATE_TIME,
                    "until": _DATE_TIME,
                    "rule": {"type": "string"},
                    "cause": {"type": "string"},
                    "threshold": {"type": "string"},
                    "retryAfter": {"type": ["number", "null"]},
                    "origin": {"type": "string"},
                },
            },
        }
    ),
    "HealthCheck": _object(
        {
            "healthy": {"type": "boolean"},
            "path": {"type": "string"},
            "interval": {"type": "number"},
            "consecutiveFailures": {"type": "integer"},
            "consecutiveSuccesses": {"type": "integer"},
            "lastProbe": {
                "type": ["object", "null"],
                "properties": {
                    "at": _DATE_TIME,
                    "result": {"type": "string", "examples": ["status 200", "timeout"]},
                },
            },
        }
    ),
    "RegenerateKey": _object({"key": {"enum": ["primary", "secondary"]}}, "key", closed=True),
    "UsageReport": _object(
        {
            "from": _DATE_TIME,
            "to": {**_DATE_TIME, "description": "Excluded"},
            "group_by": {"type": "array", "items": {"enum": list(_GROUP_KEYS)}},
            "rows": {"type": "array", "items": _ref("UsageRow")},
            "totals": {"type": "array", "items": _ref("UsageTotal"), "description": _TOTALS},
        },
        "from",
        "to",
        "group_by",
        "rows",
        "totals",
    ),
    "UsageRow": {
        "description": "One group: its keys by group-by name (day: YYYY-MM-DD, hour: "
        "YYYY-MM-DDTHH:00:00Z, UTC; status: an integer; null: not set), then the sums.",
        "type": "object",
        "additionalProperties": {"type": ["string", "integer", "null"]},
        "properties": _USAGE_SUMS,
    },
    "UsageTotal": _object(_USAGE_SUMS, "currency", "requests", "cost"),
}


def _usage_report() -> dict[str, Any]:
    operation = _op(
        "Usage and cost from the usage ledger over a time range, grouped (cross-charging)",
        (200, "UsageReport"),
        parameters=[
            _query("from", {"type": "string"}, "ISO 8601 date or date-time, UTC if no zone"),
            _query("to", {"type": "string"}, "Excluded; at most 400 days after `from`"),
            _query(
                "group-by",
                {"type": "string", "examples": ["subscription,model", "day"]},
                f"Comma-separated: {', '.join(_GROUP_KEYS)}. Rows are always split by currency",
            ),
            _query("format", {"enum": ["json", "csv"], "default": "json"}, "CSV: the rows"),
            *(
                _query(name, {"type": "string"}, "Only requests with this value")
                for name in _GROUP_KEYS
                if name not in ("day", "hour")
            ),
        ],
    )
    operation["parameters"][0]["required"] = operation["parameters"][1]["required"] = True
    operation["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    operation["responses"]["503"] = _json(
        _ref("Error"), "The usage ledger is off, or its database is unavailable"
    )
    return operation


_PATHS: dict[str, Any] = {
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {
                "200": _json({"type": "object"}, "OpenAPI 3.1"),
                "401": {"$ref": "#/components/responses/E401"},
            },
        }
    },
    "/products": {"get": _op("List the products in the config", (200, "ProductList"))},
    "/products/{id}": {
        "parameters": [_ID],
        "get": _op("Get a product", (200, "Product"), 404),
    },
    "/subscriptions": {
        "get": _op(
            "List subscriptions, ordered by id",
            (200, "SubscriptionList"),
            503,
            parameters=[
                _query("product", {"type": "string"}, "Only those scoped to this product"),
                _query("state", {"enum": _STATES}, "Only those in this state (as effective now)"),
            ],
        ),
        "post": _op(
            "Create a subscription; the answer holds both keys, shown only this once",
            (201, "SubscriptionWithKeys"),
            409,
            413,
            503,
            body="CreateSubscription",
        ),
    },
    "/subscriptions/{id}": {
        "parameters": [_ID],
        "get": _op("Get a subscription (never its keys)", (200, "Subscription"), 404, 503),
        "patch": _op(
            "Change a subscription",
            (200, "Subscription"),
            404,
            409,
            413,
            503,
            body="UpdateSubscription",
        ),
    },
    **{
        f"/subscriptions/{{id}}/{action}": {
            "parameters": [_ID],
            "post": _op(
                summary,
                (200, "Subscription"),
                404,
                409,
                413,
                503,
                body="StateChange",
                body_required=False,
            ),
        }
        for action, summary in (
            ("suspend", "Suspend: its keys stop working until it is activated"),
            ("activate", "Activate a suspended or submitted subscription"),
            ("cancel", "Cancel for good: it cannot be activated again"),
        )
    },
    "/subscriptions/{id}/regenerate-key": {
        "parameters": [_ID],
        "post": _op(
            "Replace one key; the answer holds the new key, shown only this once",
            (200, "SubscriptionWithKeys"),
            404,
            409,
            413,
            503,
            body="RegenerateKey",
        ),
    },
    "/subscriptions/{id}/audit": {
        "parameters": [_ID],
        "get": _op(
            "A subscription's changes, newest first",
            (200, "AuditList"),
            404,
            503,
            parameters=[_LIMIT],
        ),
    },
    "/audit": {
        "get": _op("Every change, newest first", (200, "AuditList"), 503, parameters=[_LIMIT])
    },
    "/backends": {
        "get": _op(
            "Every backend and pool: breaker state, in-flight, failures", (200, "BackendList")
        )
    },
    "/backends/{id}": {
        "parameters": [_ID],
        "get": _op("One backend or pool", (200, "Backend"), 404),
    },
    "/usage/report": {"get": _usage_report()},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "aigw admin API",
        "version": "1",
        "description": "Products, subscriptions, keys, the audit log, the state of the "
        "backends and the usage report. Every request needs "
        "`Authorization: Bearer <admin token>`; `X-Aigw-Actor` names the person in the audit log.",
    },
    "security": [{"adminToken": []}],
    "paths": _PATHS,
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "schemas": _SCHEMAS,
        "responses": {
            f"E{status}": _json(_ref("Error"), description)
            for status, description in _ERRORS.items()
        },
    },
}
