"""Importing this module registers every built-in policy under its APIM-style name."""

from __future__ import annotations

from aigw.policies import (  # noqa: F401
    authentication_managed_identity,
    check_header,
    choose,
    emit_token_metric,
    ip_filter,
    llm_model_access,
    llm_token_limit,
    quota_by_key,
    rate_limit_by_key,
    retry,
    return_response,
    rewrite_uri,
    set_backend_service,
    set_header,
    set_query_parameter,
    set_variable,
    validate_azure_ad_token,
    validate_jwt,
)
