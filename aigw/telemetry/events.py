"""Names of the gateway's own counted events (`MetricsSink.event`), with their labels.

Each becomes the Prometheus counter `aigw_<name>_total` and the OTLP counter
`aigw.<name with _ as .>`.
"""

from __future__ import annotations

from typing import Final

# {"policy": APIM name, "mode": "fail-closed"|"fail-open"}: a limit's counter store failed
# (fail-closed: the request was refused with 503; fail-open: let through unchecked).
LIMIT_STORE_ERRORS: Final = "limit_store_errors"
# {"reason": "buffer-full"|"shutdown"}: ledger records lost (amount = how many).
LEDGER_DROPPED_RECORDS: Final = "ledger_dropped_records"
# {}: ledger records written (amount = how many).
LEDGER_WRITTEN_RECORDS: Final = "ledger_written_records"
# {"identity": kind, "result": "ok"|"error"}: backend tokens the gateway's identity acquired.
IDENTITY_TOKEN_ACQUISITIONS: Final = "identity_token_acquisitions"  # noqa: S105
# {"metric": name}: label sets folded into `other` by the cardinality guard.
METRIC_SERIES_DROPPED: Final = "metric_series_dropped"

DESCRIPTIONS: Final = {
    LIMIT_STORE_ERRORS: "Failures of a limit's counter store (the policy's on-store-error decided)",
    LEDGER_DROPPED_RECORDS: "Usage ledger records dropped (buffer full during an outage)",
    LEDGER_WRITTEN_RECORDS: "Usage ledger records written",
    IDENTITY_TOKEN_ACQUISITIONS: "Backend access tokens acquired by the gateway's identity",
    METRIC_SERIES_DROPPED: "Label sets the cardinality guard folded into 'other'",
}
