"""Campaigns: one Liquid body (and drip steps) to many recipients, created in seconds, fanned out in chunks.

Owns recipients and their skip reasons, creation with a group estimate, reading and steering
(pause, resume, cancel), Liquid templates and the fan-out that turns each step into messages. What a
campaign's message must wait for at send time (pause, quiet hours, a late opt-out) is messaging's
send policy, so the send step never calls back up here.

May import messaging, ledger, twilio and the root; never billing.
"""
