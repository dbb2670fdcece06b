"""The credit ledger: accounts, lots in burn order, holds, expiry, users' allocations and the invariants.

Owns every change to `accounts`' totals, `lots`, `holds` and `entries`; nothing outside this package
writes those rows. The rules of the room (one Session from the caller, integer millicredits, `now`
from the caller, lock order, keyed operations) are stated once in `book`. On PostgreSQL, reserve and
settle run as the PL/pgSQL functions of `plpgsql`, kept equal to the Python path by a state machine test.

May import the root only (config, db, models, errors, ids, money): it knows nothing of messages,
Twilio, campaigns or payments.
"""
