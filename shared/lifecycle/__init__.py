"""Account life: cancel, reactivate and mark as spam, over every context an account lives in.

Canceling reaches into campaigns (canceled), messaging (unsent messages canceled, numbers released) and
the ledger (no more holds, plan and rollover credits written off, keys revoked), in one unit of work,
with one account event. It sits above campaigns and billing so that each of those stays unaware of it.

May import campaigns, billing, messaging, twilio, ledger and the root.
"""
