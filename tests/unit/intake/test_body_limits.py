"""Body limits: 1 MiB for JSON and forms, 20 MiB for the bulk routes; over it, 413 problem+json before the body
is read, and nothing runs."""

import asyncio
import json

import pytest
from sqlalchemy import func, select

from intake.app import init_app
from intake.body_limits import MAX_BODY_BYTES, MAX_BULK_BODY_BYTES
from shared.models import Account, OptOut

OPERATOR_KEY = "test-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
async def client(aiohttp_client, settings, sqlite_database, fake_broker):
    with sqlite_database.unit_of_work() as session:
        session.add(Account(id="acct_1", name="Realty"))
    return await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))


def count(database, model) -> int:
    with database.read_only() as session:
        return session.scalar(select(func.count()).select_from(model))


async def head_only(client, path: str, content_length: int, content_type: str) -> tuple[bytes, bytes]:
    """Announce a body of `content_length` bytes and send none of it: the answer comes without the body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n"
                 f"Content-Type: {content_type}\r\nContent-Length: {content_length}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    body = await reader.readexactly(length)
    writer.close()
    return head, body


@pytest.mark.parametrize(("path", "content_type", "limit"), [
    ("/v1/accounts", "application/json", MAX_BODY_BYTES),
    ("/webhooks/twilio/status", "application/x-www-form-urlencoded", MAX_BODY_BYTES),
    ("/v1/opt-outs/import?account_id=acct_1", "text/csv", MAX_BULK_BODY_BYTES),
    ("/v1/campaigns", "text/csv", MAX_BULK_BODY_BYTES),
])
async def test_a_body_announced_over_the_limit_is_a_413_before_a_byte_of_it_is_read(client, sqlite_database, path,
                                                                                   content_type, limit):
    head, body = await asyncio.wait_for(head_only(client, path, limit + 1, content_type), timeout=30)

    assert head.startswith(b"HTTP/1.1 413 ") and b"application/problem+json" in head
    problem = json.loads(body)
    assert (problem["status"], problem["max_bytes"]) == (413, limit)
    assert count(sqlite_database, Account) == 1 and count(sqlite_database, OptOut) == 0


async def test_a_chunked_body_that_grows_past_the_limit_is_a_413_and_creates_nothing(client, sqlite_database):
    async def chunks():
        yield b'{"name": "'
        for _ in range(MAX_BODY_BYTES // 65536 + 1):
            yield b"x" * 65536
        yield b'"}'

    response = await client.post("/v1/accounts", data=chunks(),
                                 headers={**OPERATOR, "Content-Type": "application/json"})

    assert response.status == 413 and response.content_type == "application/problem+json"
    assert count(sqlite_database, Account) == 1


async def test_a_bulk_route_takes_a_list_larger_than_a_json_body_may_be(client, sqlite_database):
    phones = [f"+1415555{n:04d}" for n in range(100)]
    csv_text = "phone,notes\n" + "".join(f"{phone},{'x' * 20_000}\n" for phone in phones)
    assert MAX_BODY_BYTES < len(csv_text) < MAX_BULK_BODY_BYTES

    response = await client.post("/v1/opt-outs/import?account_id=acct_1", data=csv_text.encode(),
                                 headers={**OPERATOR, "Content-Type": "text/csv"})

    assert response.status == 200 and (await response.json())["added"] == 100
    assert count(sqlite_database, OptOut) == 100
