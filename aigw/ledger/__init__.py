"""The usage ledger: one row per model request, written in batches off the hot path, and the
cross-charging report aggregated from it (by subscription, product, user, model, day…)."""
