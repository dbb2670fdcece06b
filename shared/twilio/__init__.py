"""The Twilio edge: the gateway over the official `twilio` client, its error classes and webhook signatures.

Only `gateway` talks to Twilio, and it raises only the classes of `errors`, so callers never read
HTTP statuses or Twilio codes. Nothing here decides what a failure means for money or messages:
messaging does.

May import the root only; the official client is imported as `twilio` (this package is `shared.twilio`).
"""
