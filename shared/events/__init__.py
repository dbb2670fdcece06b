"""Events for integrators: what happened to an account, pushed to its webhook endpoints, signed.

    types       the event types and what each one means
    outbox      `emit` / `message_event`: the event row, written in the caller's transaction only when an enabled
                endpoint of the account takes its type (one statement), and handed to the dispatcher on commit
    endpoints   an account's endpoints: URL, types, the signing secret (shown once, encrypted at rest)
    addresses   where an endpoint may point: https and public addresses only, outside development
    delivery    fan-out of an event to its endpoints, one attempt at a time with backoff, the log, replay
    signing     Standard Webhooks headers (the `standardwebhooks` package)
    transport   the HTTP POST itself, to the address that was checked (no second DNS answer)

It belongs to the root of the domain core: every context (ledger, messaging, billing, campaigns) writes its
events through it, and it imports only the root (models, ids, secrets, config). Every function takes the
caller's Session and never commits, except the delivery steps that talk to the network, which take the
Database and keep each transaction short. A delivery is at least once: the event's id is its `webhook-id`,
the same on every attempt and replay, for receivers to de-duplicate.
"""
