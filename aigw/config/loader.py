"""Reading a config file: YAML → named values substituted → typed tree, all errors at once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from aigw.config.errors import ConfigError, IssueCollector, format_loc
from aigw.config.model import GatewayConfig, IdentityConfig

_NAMED_VALUE = re.compile(r"\{\{\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*\}\}")
MAX_CONFIG_BYTES = 16 * 2**20


# Identifies a file version: following symlinks, so a Kubernetes secret mount's swap shows.
FileStamp = tuple[int, int, int, int] | None  # (device, inode, mtime ns, size); None: unreadable


def file_stamp(path: str) -> FileStamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_mtime_ns, info.st_size)


@dataclass(frozen=True, slots=True)
class KeyVaultRef:
    """One Key Vault secret a named value reads (the latest version)."""

    vault_url: str
    secret_name: str
    client_id: str | None = None  # overrides the identity's own
    # The config's `identity` section, which reads it: part of the key, so a reload that
    # changes the identity reads afresh. None when that section is invalid (nothing is read;
    # the load reports the section's problems).
    identity: IdentityConfig | None = field(default_factory=IdentityConfig)

    def __str__(self) -> str:  # for messages: never carries the value
        return f"secret '{self.secret_name}' in {self.vault_url}"


@dataclass(frozen=True)
class LoadedConfig:
    config: GatewayConfig
    secrets: frozenset[str]
    source: str
    # What the named values were read from, for the watcher that reloads when they change.
    files: Mapping[str, FileStamp] = field(default_factory=dict)
    key_vault: Mapping[str, KeyVaultRef] = field(default_factory=dict)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in result:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (line {mark.line + 1})", mark
            )
        result[key] = loader.construct_object(value_node, deep=deep)
    return result


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def parse_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc)]) from None
    except RecursionError:
        raise ConfigError([_issue("", "invalid YAML: nested too deeply")]) from None


def _yaml_issue(exc: yaml.YAMLError) -> Any:
    from aigw.config.errors import ConfigIssue

    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigIssue("", f"invalid YAML{where}: {problem}")


def key_vault_refs(raw: Any) -> dict[str, KeyVaultRef]:
    """The Key Vault secrets a parsed config's named values read, by named value, each with
    the identity the same config selects (they are read before the config is loaded)."""
    refs = _key_vault_sources(raw, None)
    return _key_vault_sources(raw, _identity(raw)) if refs else refs


def _key_vault_sources(raw: Any, identity: IdentityConfig | None) -> dict[str, KeyVaultRef]:
    entries = raw.get("named-values") if isinstance(raw, dict) else None
    refs: dict[str, KeyVaultRef] = {}
    for name, spec in (entries if isinstance(entries, dict) else {}).items():
        source = spec.get("key-vault") if isinstance(spec, dict) else None
        if not isinstance(source, dict):
            continue
        url, secret, client = (source.get(k) for k in ("vault-url", "secret-name", "client-id"))
        if isinstance(url, str) and isinstance(secret, str) and isinstance(client, str | None):
            refs[str(name)] = KeyVaultRef(url.rstrip("/"), secret, client, identity)
    return refs


def _identity(raw: dict[str, Any]) -> IdentityConfig | None:
    """The `identity` section as the load will see it, or None if it is not valid. Named
    values in it are substituted, except Key Vault ones: they are read with it."""
    if "identity" not in raw:
        return IdentityConfig()
    section = raw["identity"]
    if "{{" in repr(section):
        unread = IssueCollector()
        values = _resolve_named_values(raw, unread, {}, {}, _key_vault_sources(raw, None))
        used = IssueCollector()
        section = _substitute(section, values, "identity", used, frozenset())
        if used.issues:
            return None
    try:
        return IdentityConfig.model_validate(section)
    except ValidationError:
        return None


def _resolve_named_values(
    raw: dict[str, Any],
    issues: IssueCollector,
    vault: Mapping[KeyVaultRef, str],
    files: dict[str, FileStamp],
    refs: Mapping[str, KeyVaultRef],
) -> dict[str, tuple[str, bool]]:
    """Read each named value from its source; returns name → (value, is_secret)."""
    resolved: dict[str, tuple[str, bool]] = {}
    entries = raw.get("named-values") or {}
    if not isinstance(entries, dict):
        return resolved  # the typed validation reports the shape problem
    for name, spec in entries.items():
        if not isinstance(spec, dict):
            continue
        secret = bool(spec.get("secret", False))
        path = f"named-values.{name}"
        if name in refs:
            # Fetched beforehand (asynchronously, see aigw.namedvalues); always secret.
            if refs[name] in vault:
                resolved[name] = (vault[refs[name]], True)
            elif refs[name].identity is None:
                issues.add(
                    path,
                    f"Key Vault {refs[name]} was not read: the 'identity' section it is read "
                    "with is invalid, or uses a Key Vault named value",
                )
            else:
                issues.add(path, f"Key Vault {refs[name]} has not been fetched")
        elif isinstance(spec.get("value"), str):
            resolved[name] = (spec["value"], secret)
        elif isinstance(spec.get("env"), str):
            value = os.environ.get(spec["env"])
            if value is None:
                issues.add(path, f"environment variable '{spec['env']}' is not set")
            else:
                resolved[name] = (value, secret)
        elif isinstance(spec.get("file"), str):
            files[spec["file"]] = file_stamp(spec["file"])  # before reading: a change re-reads
            try:
                resolved[name] = (Path(spec["file"]).read_text().rstrip("\r\n"), secret)
            except OSError as exc:
                issues.add(path, f"cannot read file '{spec['file']}': {exc.strerror}")
    return resolved


def _substitute(
    node: Any,
    values: dict[str, tuple[str, bool]],
    path: str,
    issues: IssueCollector,
    declared: frozenset[str],
) -> Any:
    if isinstance(node, dict):
        return {
            k: _substitute(v, values, f"{path}.{k}" if path else str(k), issues, declared)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _substitute(v, values, f"{path}[{i}]", issues, declared) for i, v in enumerate(node)
        ]
    if isinstance(node, str) and "{{" in node:

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return values[name][0]
            if name not in declared:  # declared but unreadable: its own entry says why
                issues.add(path, f"named value '{{{{{name}}}}}' is not defined")
            return ""

        return _NAMED_VALUE.sub(replace, node)
    return node


def load_config_text(
    text: str, source: str = "<string>", vault: Mapping[KeyVaultRef, str] | None = None
) -> LoadedConfig:
    """`vault`: the values of the Key Vault secrets the named values read (fetched before)."""
    raw = parse_yaml(text)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([_issue("", "the config file must be a YAML mapping")])
    issues = IssueCollector()
    files: dict[str, FileStamp] = {}
    refs = key_vault_refs(raw)
    values = _resolve_named_values(raw, issues, vault or {}, files, refs)
    entries = raw.get("named-values")
    declared = frozenset(entries) if isinstance(entries, dict) else frozenset()
    substituted = {
        key: value
        if key == "named-values"
        else _substitute(value, values, str(key), issues, declared)
        for key, value in raw.items()
    }
    config: GatewayConfig | None = None
    try:
        config = GatewayConfig.model_validate(substituted)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            issues.add(format_loc(err["loc"]).lstrip("."), err["msg"])
    secrets = frozenset(value for value, secret in values.values() if secret and value)
    issues.raise_if_any(secrets)
    assert config is not None
    return LoadedConfig(config=config, secrets=secrets, source=source, files=files, key_vault=refs)


def load_config(
    path: str | os.PathLike[str], vault: Mapping[KeyVaultRef, str] | None = None
) -> LoadedConfig:
    return load_config_text(read_config_text(path), str(path), vault)


def read_config_text(path: str | os.PathLike[str]) -> str:
    file = Path(path)
    try:
        if file.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError([_issue("", f"config file '{file}' is larger than 16 MiB")])
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([_issue("", f"cannot read config file '{file}': {exc}")]) from None
    return text


def _issue(path: str, message: str) -> Any:
    from aigw.config.errors import ConfigIssue

    return ConfigIssue(path, message)


def check_references(config: GatewayConfig, issues: IssueCollector) -> None:
    """Dangling references between parts of the config (policies check their own)."""
    for backend_id, backend in config.backends.items():
        shared = backend.circuit_breaker is not None and backend.circuit_breaker.shared
        if shared and config.counters.url is None:
            issues.add(
                f"backends.{backend_id}.circuit-breaker.shared",
                "a shared circuit breaker needs Redis: set 'counters.url'",
            )
        members = backend.pool.members if backend.pool is not None else []
        for index, member in enumerate(members):
            path = f"backends.{backend_id}.pool.members[{index}].backend"
            target = config.backends.get(member.backend)
            if target is None:
                issues.add(path, f"backend '{member.backend}' is not defined")
            elif target.type == "pool":
                issues.add(path, "a pool's members are backends, not pools (no nesting)")
        if len({member.backend for member in members}) != len(members):
            issues.add(f"backends.{backend_id}.pool.members", "a backend appears twice")
    for api_id, api in config.apis.items():
        if api.backend is not None and api.backend not in config.backends:
            issues.add(f"apis.{api_id}.backend", f"backend '{api.backend}' is not defined")
        for op_id, op in api.operations.items():
            path = f"apis.{api_id}.operations.{op_id}"
            if api.type == "http":
                if not op.method:
                    issues.add(f"{path}.method", "an operation of an http API needs a 'method'")
                if not op.url_template or not op.url_template.startswith("/"):
                    issues.add(f"{path}.url-template", "must be a path starting with '/'")
                elif "?" in op.url_template or "#" in op.url_template:
                    issues.add(
                        f"{path}.url-template",
                        "must be a path only; read query parameters in policies instead",
                    )
            elif op.method or op.url_template:
                issues.add(
                    path,
                    f"operations of a '{api.type}' API are built in; only 'policies' may be set",
                )
    prefixes: dict[str, str] = {}
    for api_id, api in config.apis.items():
        key = api.path.lower()  # prefixes match case-insensitively
        if key in prefixes and config.apis[prefixes[key]].type == api.type:
            issues.add(
                f"apis.{api_id}.path",
                f"path '{api.path}' is already used by api '{prefixes[key]}'",
            )
        prefixes.setdefault(key, api_id)
    open_products: dict[str, str] = {}
    for product_id, product in config.products.items():
        for index, api_id in enumerate(product.apis):
            if api_id not in config.apis:
                issues.add(f"products.{product_id}.apis[{index}]", f"api '{api_id}' is not defined")
            elif not product.subscription_required:
                if api_id in open_products:
                    issues.add(
                        f"products.{product_id}.apis[{index}]",
                        f"api '{api_id}' is already in open product '{open_products[api_id]}'; "
                        "an API can belong to at most one open product",
                    )
                open_products.setdefault(api_id, product_id)
