"""The subcommands, in the order `creditq --help` lists them."""

from . import (
    account,
    campaign,
    data,
    db,
    dev,
    estimate,
    ledger,
    month_end,
    rates,
    report,
    scheduler,
    secrets,
    stripe_sim,
    twilio_sim,
    web,
    worker,
)

COMMANDS = [dev, web, worker, scheduler, twilio_sim, stripe_sim, db, rates, secrets, estimate, ledger, month_end, report, campaign,
            account, data]
