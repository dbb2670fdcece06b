"""Messages sent from a dunning site: an account's billing site with its own Twilio number and credentials.

A message naming a site (`dunning_site_id`) goes out, is reconciled and has its callbacks verified with the
site's credentials instead of the account's; it is still the account's message, metered against its credits
and parked by its locks. Its recipients' STOP to the site's number opts them out of that site's texts only
(the account's other numbers and sites still reach them), and HELP is answered with the site's help text.
A 20003 on the site's credentials marks that site broken; the account and its other sites send on.
Billing saves the sites (shared.billing.dunning_texts); this module is what the message pipeline reads.
"""

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from shared.models import DunningIntegration, DunningSiteOptOut

BROKEN_REASON = "Twilio rejected these credentials (20003): save new credentials to resume dunning texts"


@dataclass(frozen=True)
class SiteNumber:
    """The account site that texts from a number, with its credentials (inbound texts to it are signed by them)."""

    id: str
    account_id: str
    account_sid: str
    auth_token: str
    help_text: str | None


def site_of_number(session: Session, phone: str) -> SiteNumber | None:
    """The account's site whose number is `phone` (creditq's built-in sites receive nothing), or None."""
    site = session.scalar(select(DunningIntegration).where(DunningIntegration.from_number == phone,
                                                           DunningIntegration.account_id.is_not(None)).limit(1))
    if site is None:
        return None
    return SiteNumber(site.id, site.account_id, site.account_sid, site.auth_token, site.help_text)


def site_credentials(session: Session, site_id: str) -> tuple[str, str]:
    """(account_sid, auth_token) of the site, for the gateway that sends or looks up its messages."""
    site = session.get(DunningIntegration, site_id)
    return site.account_sid, site.auth_token


def opt_out_of_site(session: Session, site_id: str, phone: str, *, now: datetime) -> bool:
    """`phone` texted STOP to the site's number: no more texts from that site. True if it was new; replays are no-ops."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[session.get_bind().dialect.name]
    added = session.scalar(insert(DunningSiteOptOut).values(site_id=site_id, phone=phone, created_at=now)
                           .on_conflict_do_nothing(index_elements=["site_id", "phone"])
                           .returning(DunningSiteOptOut.phone))
    return added is not None


def opt_in_to_site(session: Session, site_id: str, phone: str) -> None:
    """`phone` texted START to the site's number: its texts reach them again."""
    session.execute(delete(DunningSiteOptOut).where(DunningSiteOptOut.site_id == site_id,
                                                    DunningSiteOptOut.phone == phone))


def is_opted_out_of_site(session: Session, site_id: str, phone: str) -> bool:
    return session.get(DunningSiteOptOut, (site_id, phone)) is not None


def reject_site_credentials(session: Session, site_id: str, version: int, *, now: datetime) -> None:
    """20003 on the site's credentials of this `version`: the site is broken until new ones are saved (a save that
    landed meanwhile, even of the same token, is a new version and stays ok)."""
    session.execute(update(DunningIntegration).where(DunningIntegration.id == site_id,
                                                     DunningIntegration.credential_version == version)
                    .values(status="broken", broken_reason=BROKEN_REASON, updated_at=now))
