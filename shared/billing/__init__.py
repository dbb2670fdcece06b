"""Billing: the calendar, month-end, low-balance notices, reports, purchases, auto-recharge and dunning.

Owns when periods end and what closing one does (grants, rollover and expiry, debt billed, number
fees), money taken through the payment gateway port, the price list, and chasing unpaid bills by
email and by text: creditq's own unpaid bills from its built-in site, and an account's customers'
failed payments from the account's sites, whose texts go through the message pipeline like any message.
Each calendar job is idempotent per (account, period) through a claimed row, so a double fire never grants or bills twice.

May import messaging, ledger, twilio and the root; never campaigns.
"""
