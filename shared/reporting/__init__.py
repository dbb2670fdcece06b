"""Reporting: what accounts spent and have scheduled, read without touching the hot paths.

Owns `daily_usage` and its marker `daily_usage_folds`: the ledger's spending (and expiry) entries folded per
account, user, local day and kind after they are written, so forecasts, advice and the console read days,
not millions of entries; and `scheduled`, the sends due later that hold nothing yet. Writes nothing else.
May import the root only: it reads the entries, messages and campaigns tables as rows and never writes them.
"""
