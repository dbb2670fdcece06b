"""One message's life: estimate, accept, send, status, settle, and what keeps every accepted message moving.

Owns segments and the rate card, accepting, the send step and its send-time policy (quiet hours,
paused campaigns, late opt-outs), Twilio's status reports, settlement, parking of blocked accounts,
the sweeper, inbound messages and opt-outs, sender numbers and their throttle, the deployment's shared
short code (accounts' keywords on it, and routing texts to it), new accounts' daily send cap, and an
account's own Twilio credentials (saving them releases its parked messages). Every
step is keyed by the message id, so a job delivered twice changes nothing the second time.

May import twilio, ledger and the root; never campaigns or billing, which call into it. Messages from an
account's dunning site go with the site's number and credentials and obey its STOPs (sites.py).
"""
