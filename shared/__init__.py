"""The domain core of creditq, one package per bounded context over a small root. No web or queue framework.

    lifecycle/               an account's life: cancel, reactivate, spam   (may import everything below)
    campaigns/  billing/     what customers schedule and pay for          (may import everything below)
    voice/                   calls, broadcasts, forwarding, voicemail      (may import everything below)
    messaging/               one message's life, from estimate to settled  (may import twilio, ledger, root)
    twilio/     ledger/      the Twilio edge; the credits and their rules  (may import the root only)
    root                     config, db, models, migrations, broker, redis, email, ids, money, errors,
                             API keys, idempotency records, events (the outbox and webhook deliveries, which
                             every context writes through): what every context needs, importing none of them

Imports point down only and never in a circle: tests/unit/test_layers.py checks it with import-linter
(the contracts are in pyproject.toml). intake/, workers/, scheduler/ and creditq/ are thin adapters
that call into these packages.
"""
