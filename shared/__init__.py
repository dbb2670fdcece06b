"""The domain core of creditq: ledger, pricing, persistence and adapters. Free of web and queue frameworks."""
