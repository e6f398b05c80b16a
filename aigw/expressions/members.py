"""The static type table: which members each expression type has and how they read the context.

APIM names map onto `aigw.context.RequestContext` as follows (our additions are marked *):

    context.RequestId, .Timestamp (DateTime; ToString() is ISO 8601), .Elapsed (seconds)
    context.Variables                      ["name"], GetValueOrDefault, ContainsKey
    context.Request   .Method .Url .IpAddress .Headers .MatchedParameters   (no .Body)
    context.Response  .StatusCode .Headers                                  (null before a response)
    context.Api       .Id .Name .Path .Type
    context.Operation .Id .Name .Method .UrlTemplate
    context.Product   .Id .Name .State .SubscriptionRequired                (each of these
    context.Subscription .Id .Name .Key  (no PrimaryKey/SecondaryKey)        four may be null)
    context.User      .Id .Email .FirstName .LastName
    context.LastError .Source .Reason .Message .Section .Scope .PolicyId
    context.Claims*   ["oid"], GetValueOrDefault, ContainsKey   (the validated JWT's claims,
                      several values joined with ','; null until validate-jwt admitted it)
    context.Deployment .DeploymentId* .Model*   (the routed deployment and model; APIM's
                                                 Region/ServiceName/... do not exist here)

Headers lookups are case-insensitive and join repeated headers with ", ". String methods are
ordinal (APIM's StartsWith/EndsWith are culture-sensitive) and count code points, not UTF-16 units.
No method or operator returns a string longer than `runtime.MAX_STRING_CHARS` (64 Ki characters).
Values of `context.Variables` are dynamically typed: only string members are allowed on them
and they are checked when evaluated; C# casts `(string)`, `(bool)`, `(int)`, `(long)` and
`(double)` are accepted and checked at runtime too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal

from aigw.expressions import runtime

if TYPE_CHECKING:
    from aigw.headers import Headers

TypeKind = Literal["scalar", "list", "object"]
# "string": a non-null string; "string?": string or null; "int": an integer; "any": any value.
ParamKind = Literal["string", "string?", "int", "any"]


@dataclass(frozen=True, slots=True)
class Property:
    type: ExprType
    get: Callable[[Any], Any]
    requires_str: bool = False


@dataclass(frozen=True, slots=True)
class Method:
    result: ExprType
    params: tuple[ParamKind, ...]
    call: Callable[..., Any]
    required: int = -1  # -1: all parameters are required
    requires_str: bool = False

    @property
    def min_args(self) -> int:
        return len(self.params) if self.required < 0 else self.required


@dataclass(frozen=True, slots=True)
class Indexer:
    key: ParamKind
    result: ExprType
    get: Callable[[Any, Any], Any]  # returns runtime.MISSING for an absent key
    missing: str  # detail with a "{key}" placeholder, e.g. 'variable {key} is not set'


@dataclass(eq=False, slots=True)
class ExprType:
    name: str
    kind: TypeKind = "object"
    properties: dict[str, Property] = field(default_factory=dict)
    methods: dict[str, Method] = field(default_factory=dict)
    indexer: Indexer | None = None
    unsupported: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"ExprType({self.name})"


STRING = ExprType("string", "scalar")
NUMBER = ExprType("number", "scalar")
BOOL = ExprType("bool", "scalar")
DATETIME = ExprType("DateTime", "scalar")
NULL = ExprType("null", "scalar")
DYNAMIC = ExprType("object", "scalar")  # a context.Variables value: any type, checked at runtime
STRING_LIST = ExprType("string[]", "list")

_TO_STRING = Method(STRING, (), runtime.capped(runtime.to_string))


def _string_members(target: ExprType) -> None:
    target.properties["Length"] = Property(NUMBER, len, requires_str=True)
    lower, upper = runtime.case_mapping(str.lower), runtime.case_mapping(str.upper)
    plain: dict[str, Callable[..., Any]] = {
        "ToLower": lower,
        "ToUpper": upper,
        "ToLowerInvariant": lower,
        "ToUpperInvariant": upper,
        "Trim": runtime.capped(str.strip),
    }
    for name, call in plain.items():
        target.methods[name] = Method(STRING, (), call, requires_str=True)
    for name, call in {
        "Contains": runtime.str_contains,
        "StartsWith": runtime.str_starts_with,
        "EndsWith": runtime.str_ends_with,
    }.items():
        target.methods[name] = Method(BOOL, ("string",), call, requires_str=True)
    target.methods.update(
        ToString=_TO_STRING,
        Equals=Method(BOOL, ("string?",), runtime.str_equals, requires_str=True),
        Substring=Method(
            STRING,
            ("int", "int"),
            runtime.capped(runtime.str_substring),
            required=1,
            requires_str=True,
        ),
        Replace=Method(STRING, ("string", "string?"), runtime.str_replace, requires_str=True),
        Split=Method(STRING_LIST, ("string",), runtime.str_split, requires_str=True),
    )


_string_members(STRING)
_string_members(DYNAMIC)
for _scalar in (NUMBER, BOOL, DATETIME):
    _scalar.methods["ToString"] = _TO_STRING
STRING_LIST.properties["Length"] = Property(NUMBER, len)
STRING_LIST.indexer = Indexer("int", STRING, runtime.list_item, "index {key} is out of range")


def _dict_get_or_default(data: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return data.get(key, default)


def _dict_contains(data: Mapping[str, Any], key: str) -> bool:
    return key in data


def _dict_item(data: Mapping[str, Any], key: str) -> Any:
    return data.get(key, runtime.MISSING)


def _mapping(name: str, value: ExprType, default: ParamKind, missing: str) -> ExprType:
    return ExprType(
        name,
        methods={
            "GetValueOrDefault": Method(value, ("string", default), _dict_get_or_default, 1),
            "ContainsKey": Method(BOOL, ("string",), _dict_contains),
        },
        indexer=Indexer("string", value, _dict_item, missing),
    )


def _header_get_or_default(headers: Headers, name: str, default: str | None = None) -> str | None:
    joined = headers.get_joined(name)
    return default if joined is None else joined


def _header_item(headers: Headers, name: str) -> Any:
    joined = headers.get_joined(name)
    return runtime.MISSING if joined is None else joined


def _headers(name: str) -> ExprType:
    return ExprType(
        name,
        methods={
            "GetValueOrDefault": Method(STRING, ("string", "string?"), _header_get_or_default, 1),
            "ContainsKey": Method(BOOL, ("string",), _dict_contains),
        },
        indexer=Indexer("string", STRING, _header_item, "header {key} is not present"),
    )


def _record(name: str, fields: Mapping[str, tuple[str, ExprType]], **extra: str) -> ExprType:
    """An object type whose properties read attributes of a context dataclass."""
    return ExprType(
        name,
        properties={key: Property(kind, attrgetter(attr)) for key, (attr, kind) in fields.items()},
        unsupported=extra,
    )


def _strings(**fields: str) -> dict[str, tuple[str, ExprType]]:
    return {key: (attr, STRING) for key, attr in fields.items()}


def _no_body(owner: str) -> str:
    return (
        f"{owner}.Body is not supported in expressions; expressions never read or consume "
        "the message body"
    )


_KEYS_HIDDEN = (
    "context.Subscription.PrimaryKey and .SecondaryKey are not available: keys are stored "
    "only as hashes; use context.Subscription.Key for the key of this request"
)
REQUEST = _record(
    "context.Request",
    {
        **_strings(Method="method", Url="url", IpAddress="client_ip"),
        "Headers": ("headers", _headers("context.Request.Headers")),
        "MatchedParameters": (
            "matched_parameters",
            _mapping(
                "context.Request.MatchedParameters",
                STRING,
                "string?",
                "matched parameter {key} is not present",
            ),
        ),
    },
    Body=_no_body("context.Request"),
)
RESPONSE = _record(
    "context.Response",
    {
        "StatusCode": ("status_code", NUMBER),
        "Headers": ("headers", _headers("context.Response.Headers")),
    },
    Body=_no_body("context.Response"),
)
CONTEXT = _record(
    "context",
    {
        "RequestId": ("request_id", STRING),
        "Timestamp": ("timestamp", DATETIME),
        "Elapsed": ("elapsed", NUMBER),
        "Variables": (
            "variables",
            _mapping("context.Variables", DYNAMIC, "any", "variable {key} is not set"),
        ),
        "Request": ("request", REQUEST),
        "Response": ("response", RESPONSE),
        "Api": (
            "api",
            _record("context.Api", _strings(Id="id", Name="name", Path="path", Type="type")),
        ),
        "Operation": (
            "operation",
            _record(
                "context.Operation",
                _strings(Id="id", Name="name", Method="method", UrlTemplate="url_template"),
            ),
        ),
        "Product": (
            "product",
            _record(
                "context.Product",
                {
                    **_strings(Id="id", Name="name", State="state"),
                    "SubscriptionRequired": ("subscription_required", BOOL),
                },
            ),
        ),
        "Subscription": (
            "subscription",
            _record(
                "context.Subscription",
                _strings(Id="id", Name="name", Key="key"),
                PrimaryKey=_KEYS_HIDDEN,
                SecondaryKey=_KEYS_HIDDEN,
            ),
        ),
        "User": (
            "user",
            _record(
                "context.User",
                _strings(Id="id", Email="email", FirstName="first_name", LastName="last_name"),
            ),
        ),
        "Claims": (
            "claims",
            _mapping("context.Claims", STRING, "string?", "claim {key} is not in the token"),
        ),
        "LastError": (
            "last_error",
            _record(
                "context.LastError",
                _strings(
                    Source="source",
                    Reason="reason",
                    Message="message",
                    Section="section",
                    Scope="scope",
                    PolicyId="policy_id",
                ),
            ),
        ),
    },
)
# The deployment fields live directly on the context, so the "object" is the context itself.
CONTEXT.properties["Deployment"] = Property(
    _record("context.Deployment", _strings(DeploymentId="deployment_id", Model="model")),
    lambda ctx: ctx,
)
