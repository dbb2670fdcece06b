"""The subcommands, in the order `creditq --help` lists them."""

from . import db, dev, scheduler, twilio_sim, web, worker

COMMANDS = [dev, web, worker, scheduler, twilio_sim, db]
