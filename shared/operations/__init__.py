"""Running a deployment over time: the gauges an operator watches (metrics), and what happens to personal data —
message bodies and recipients' numbers redacted after the retention period (retention), one number's data erased
on request (erasure).

Reads every context's tables and redacts in messaging's and campaigns' without changing any money: the ledger's
rows (holds, entries, lots) are never touched, so `creditq ledger verify` is as clean after a redaction as before.
Sits at the top of the core, beside lifecycle; may import every context and the root.
"""
