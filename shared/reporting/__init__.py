"""Reporting: what accounts spent, read without touching the hot paths.

Owns `daily_usage` and its marker `daily_usage_folds`: the ledger's spending entries folded per account, user,
local day and kind after they are written (`daily_usage`), so forecasts, advice and the console read days,
not millions of entries. Writes nothing else. May import the root only (models, db); reads the entries and
messages tables directly, as rows, and never writes them.
"""
