"""The daily send cap of new accounts, counted per local day, on SQLite and PostgreSQL, and over HTTP."""

from datetime import UTC, datetime, timedelta

import pytest

from intake.app import init_app
from shared.api_keys import issue_key
from shared.campaigns.creation import CampaignRequest, create_campaign
from shared.config import load_settings
from shared.errors import SendLimitReached
from shared.messaging.messages import MessageRequest, accept_messages
from shared.messaging.send_cap import SendCap
from shared.models import Account
from tests.integration.messaging.test_send_pipeline import CARD, RECIPIENT, SENDER, make_account

CAP = SendCap(young_days=7, per_day=3)
# America/Chicago (UTC-6 in November): 23:30 on the 9th, then 00:30 on the 10th, local
LATE_EVENING = datetime(2026, 11, 10, 5, 30, tzinfo=UTC)
AFTER_MIDNIGHT = datetime(2026, 11, 10, 6, 30, tzinfo=UTC)
LOCAL_MIDNIGHT = datetime(2026, 11, 10, 6, 0, tzinfo=UTC)


def account(database, *, age: timedelta) -> str:
    account_id = make_account(database, 100)
    with database.unit_of_work() as session:
        row = session.get(Account, account_id)
        row.created_at, row.timezone = LATE_EVENING - age, "America/Chicago"
    return account_id


def send(database, account_id: str, *, at: datetime, count: int = 1) -> list:
    request = MessageRequest(to=RECIPIENT, from_=SENDER, body="Open house Sunday")
    with database.unit_of_work() as session:
        return accept_messages(session, [(account_id, request)] * count, rate_card=CARD, now=at, cap=CAP)


def campaign(database, account_id: str, recipients: list[str], *, at: datetime):
    return create_campaign(database, account_id, CampaignRequest(
        name="Open house", from_=SENDER, body="Open house Sunday",
        recipients=[{"to": to, "fields": {}} for to in recipients]), rate_card=CARD, now=at, cap=CAP)


def refused(outcomes: list) -> list[bool]:
    return [isinstance(outcome, SendLimitReached) for outcome in outcomes]


def test_a_new_account_is_refused_its_fourth_message_of_the_local_day_until_local_midnight(database):
    # given an account two days old, capped at 3 messages a day
    account_id = account(database, age=timedelta(days=2))

    # when it sends four messages in one batch late in its evening, and one more in another
    batch = send(database, account_id, at=LATE_EVENING, count=4)
    later = send(database, account_id, at=LATE_EVENING + timedelta(minutes=10))

    # then the fourth and fifth are refused, naming the cap and the local midnight it resets at
    assert refused(batch) == [False, False, False, True]
    assert refused(later) == [True]
    error = later[0]
    assert (error.limit, error.resets_at) == (3, LOCAL_MIDNIGHT)
    assert "3 messages a day" in str(error) and "2026-11-10T00:00:00-06:00" in str(error)
    # and after its local midnight the account may send again
    assert refused(send(database, account_id, at=AFTER_MIDNIGHT)) == [False]


def test_an_account_older_than_the_new_account_period_is_not_capped(database):
    account_id = account(database, age=timedelta(days=30))

    outcomes = send(database, account_id, at=LATE_EVENING, count=4)

    assert refused(outcomes) == [False] * 4


def test_a_campaign_counts_its_sendable_recipients_against_the_day(database):
    # given a new account that already sent one message today
    account_id = account(database, age=timedelta(days=1))
    send(database, account_id, at=LATE_EVENING)
    three = ["+14155550101", "+14155550102", "+14155550103"]

    # when it starts a campaign to three recipients, then one to two (and a duplicate, which is skipped)
    with pytest.raises(SendLimitReached) as too_many:
        campaign(database, account_id, three, at=LATE_EVENING)
    _, estimate = campaign(database, account_id, three[:2] + three[:1], at=LATE_EVENING)

    # then the first is refused whole, the second fits, and the day is used up
    assert "this one has 2 left today; this campaign has 3 sendable recipients" in str(too_many.value)
    assert estimate.sendable == 2
    assert refused(send(database, account_id, at=LATE_EVENING)) == [True]


@pytest.fixture
async def capped_client(aiohttp_client, tmp_path, sqlite_database, fake_broker):
    import workers  # noqa: F401  (declares the send actor on the broker)

    settings = load_settings({"CREDITQ_DATA_DIR": str(tmp_path / "data"), "CREDITQ_ADMIN_KEY": "x" * 16,
                              "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                              "CREDITQ_NEW_ACCOUNT_DAILY_MESSAGES": "1"})
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


async def test_over_http_the_cap_is_a_429_problem_naming_the_limit_and_when_it_resets(capped_client,
                                                                                      sqlite_database):
    # given a brand-new account allowed one message a day
    account_id = make_account(sqlite_database, 100)
    with sqlite_database.unit_of_work() as session:
        headers = {"Authorization": f"Bearer {issue_key(session, account_id)}"}
    body = {"to": RECIPIENT, "from": SENDER, "body": "Open house Sunday"}

    # when it sends two
    first = await capped_client.post("/v1/messages", json=body, headers=headers)
    second = await capped_client.post("/v1/messages", json=body, headers=headers)

    # then the second is refused until the next midnight of its time zone (UTC)
    assert first.status == 202
    assert second.status == 429 and second.content_type == "application/problem+json"
    problem = await second.json()
    resets_at = datetime.fromisoformat(problem["resets_at"])
    assert problem["limit"] == 1 and (resets_at.hour, resets_at.minute, resets_at.second) == (0, 0, 0)
    assert 0 < int(second.headers["Retry-After"]) <= 24 * 3600
    assert resets_at - timedelta(days=1) <= datetime.now(UTC) < resets_at
