"""Every documented filter of the message and recipient lists is served by an index on PostgreSQL at a million
messages: the plan of the very statement the API runs reads no big table sequentially, and the page it reads
touches a few hundred buffers, not the table's tens of thousands (EXPLAIN ANALYZE's counts, not a time).

The rows are made by PostgreSQL itself (INSERT ... SELECT over generate_series), with the models' indexes
built after the load, as a restore would.
"""

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from shared.campaigns.search import recipients_query
from shared.messaging.search import MessageFilter, messages_query
from shared.models import CampaignRecipient, Message

pytestmark = pytest.mark.postgres

MESSAGES = 1_000_000
ACCOUNTS = 20  # 50,000 messages each
CAMPAIGNS = 200
RECIPIENTS_PER_CAMPAIGN = 1_000
BIG_TABLES = ("messages", "campaign_recipients")
ACCOUNT, CAMPAIGN, USER = "acct_7", "cmp_7", "user_7"  # campaign 7 and user 7 belong to account 7 (7 = g % 20)
CAMPAIGN_SENDER = "+18000000007"  # account 7's number: its messages' from

LOAD = [
    "SET maintenance_work_mem = '256MB'",
    f"INSERT INTO accounts (id, name, timezone, plan_monthly_credits, plan_cycle, plan_rollover, overdraft_policy, "
    f"overdraft_limit, low_balance_threshold, status, credit_hold, rollover_protection, spam, balance, held, "
    f"allocated, allocated_held, quiet_hours_scope, toll_free_reprocessing) "
    f"SELECT 'acct_' || a, 'Account ' || a, 'UTC', 0, 'monthly', 'none', 'prepaid', 0, 0, 'active', false, false, "
    f"false, 0, 0, 0, 0, 'automated', false FROM generate_series(0, {ACCOUNTS - 1}) a",
    f"INSERT INTO users (id, account_id, name, email, role, balance, held) "
    f"SELECT 'user_' || a, 'acct_' || a, 'User', 'u@x.test', 'user', 0, 0 FROM generate_series(0, {ACCOUNTS - 1}) a",
    f"INSERT INTO campaigns (id, account_id, name, \"from\", status, quiet_start, quiet_end, recipients, "
    f"credits_estimated, send_at, created_at, updated_at) "
    f"SELECT 'cmp_' || c, 'acct_' || (c % {ACCOUNTS}), 'Campaign', '+1800' || lpad((c % {ACCOUNTS})::text, 7, '0'), "
    f"'running', '08:00', '21:00', "
    f"{RECIPIENTS_PER_CAMPAIGN}, 0, now(), now(), now() FROM generate_series(0, {CAMPAIGNS - 1}) c",
    f"INSERT INTO campaign_recipients (campaign_id, position, \"to\", fields, skip_reason) "
    f"SELECT 'cmp_' || c, p, '+1415' || lpad(((c * {RECIPIENTS_PER_CAMPAIGN} + p) % 100000)::text, 7, '0'), '{{}}', "
    f"CASE WHEN p % 50 = 0 THEN 'opted_out' END "
    f"FROM generate_series(0, {CAMPAIGNS - 1}) c, generate_series(0, {RECIPIENTS_PER_CAMPAIGN - 1}) p",
    # message g: account g % 20, every 50th an inbound reply, every 10th by a user, every 4th of campaign g % 200
    # (those with g % 4 = 3: 50 campaigns of 5,000 messages), to one of its recipients (five steps each)
    f"INSERT INTO messages (id, account_id, user_id, campaign_id, direction, \"to\", \"from\", body, status, "
    f"segments, encoding, credits_estimated, attempts, created_at, updated_at) "
    f"SELECT 'msg_' || lpad(to_hex(g), 26, '0'), 'acct_' || (g % {ACCOUNTS}), "
    f"CASE WHEN g % 10 = 7 THEN 'user_' || (g % {ACCOUNTS}) END, "
    f"CASE WHEN g % 4 = 3 THEN 'cmp_' || (g % {CAMPAIGNS}) END, "
    f"CASE WHEN g % 50 = 0 THEN 'inbound' ELSE 'outbound' END, "
    f"'+1415' || lpad((CASE WHEN g % 4 = 3 "
    f"THEN (g % {CAMPAIGNS}) * {RECIPIENTS_PER_CAMPAIGN} + (g / {CAMPAIGNS}) % {RECIPIENTS_PER_CAMPAIGN} "
    f"ELSE g END % 100000)::text, 7, '0'), '+1800' || lpad((g % {ACCOUNTS})::text, 7, '0'), 'Hi', "
    f"CASE WHEN g % 50 = 0 THEN 'received' "
    f"ELSE (ARRAY['delivered', 'delivered', 'delivered', 'sent', 'failed', 'undelivered', 'queued', 'scheduled', "
    f"'canceled', 'parked'])[1 + (g / {CAMPAIGNS}) % 10] END, "
    f"1, 'GSM-7', 1000, 0, timestamptz '2026-01-01' + g * interval '10 seconds', "
    f"timestamptz '2026-01-01' + g * interval '10 seconds' FROM generate_series(1, {MESSAGES}) g",
]


@pytest.fixture(scope="module")
def loaded(postgres_server):
    """A database with a million messages, its indexes, and fresh statistics (shared by the module's checks)."""
    from shared.db import Database
    from shared.models import Base

    database = Database(postgres_server.create_database("list_indexes"))
    indexes = [*Message.__table__.indexes, *CampaignRecipient.__table__.indexes]
    Base.metadata.create_all(database.engine)
    with database.engine.begin() as connection:
        for index in indexes:
            index.drop(connection)
        for statement in LOAD:
            connection.execute(text(statement))
        for index in indexes:
            index.create(connection)
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
    yield database
    database.dispose()


MAX_BUFFERS = 2_000  # a page's worth; the messages table alone is over 20,000


def plan_of(database, statement) -> tuple[str, int]:
    """The statement's plan as run, and the shared buffers the whole of it touched (hit or read)."""
    sql = statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    with database.engine.connect() as connection:
        plan = "\n".join(connection.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) {sql}")).scalars())
    top = re.search(r"Buffers: shared((?: \w+=\d+)+)", plan)  # the first is the top node's: everything below it
    return plan, sum(int(count) for count in re.findall(r"=(\d+)", top.group(1))) if top else 0


def assert_served_by_an_index(plan: str, buffers: int, most: int = MAX_BUFFERS) -> None:
    assert not any(f"Seq Scan on {table}" in plan for table in BIG_TABLES), plan
    assert "Index" in plan and buffers <= most, (buffers, plan)


def test_the_load_is_a_million_messages(loaded):
    with loaded.engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM messages")) == MESSAGES


AT = datetime(2026, 2, 1, tzinfo=UTC)
MESSAGE_FILTERS = {
    "none": MessageFilter(),
    "direction=inbound": MessageFilter(direction="inbound"),
    "direction=outbound": MessageFilter(direction="outbound"),
    "status=failed": MessageFilter(status="failed"),
    "status=received": MessageFilter(status="received"),
    "campaign_id": MessageFilter(campaign_id=CAMPAIGN),
    "user_id": MessageFilter(user_id=USER),
    "to": MessageFilter(to="+14155500107"),
    "from": MessageFilter(from_="+18000000007"),
    "created_after": MessageFilter(created_after=AT),
    "created_before": MessageFilter(created_before=AT),
    "created range": MessageFilter(created_after=AT, created_before=AT.replace(day=2)),
    "direction and status": MessageFilter(direction="outbound", status="delivered"),
}


@pytest.mark.parametrize("name", MESSAGE_FILTERS)
@pytest.mark.parametrize("before_id", [None, "msg_" + format(500_000, "x").zfill(26)], ids=["first page", "later page"])
def test_each_message_filter_is_served_by_an_index(loaded, name, before_id):
    # when GET /v1/messages runs with the filter (a first page, and one further on)
    plan, buffers = plan_of(loaded, messages_query(ACCOUNT, MESSAGE_FILTERS[name], limit=51, before_id=before_id))

    # then an index finds the page: no big table is read whole, and only a page's worth is touched
    assert_served_by_an_index(plan, buffers)


@pytest.mark.parametrize("filters", [{}, {"status": "delivered"}, {"status": "pending"}, {"status": "skipped"},
                                     {"skip_reason": "opted_out"}], ids=str)
def test_each_recipient_filter_is_served_by_an_index(loaded, filters):
    # when a page of the campaign's recipients is read with the filter
    plan, buffers = plan_of(loaded, recipients_query(CAMPAIGN, CAMPAIGN_SENDER, limit=51, **filters))

    # then the recipients come through the campaign's index, and each one's latest message through an index
    # probe: a status few recipients have reads more of the campaign (none pending here: all of it), never more
    assert_served_by_an_index(plan, buffers, most=25 * RECIPIENTS_PER_CAMPAIGN)
