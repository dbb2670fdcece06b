"""Body limits: 1 MiB for JSON and forms, 20 MiB for the bulk routes; over it, 413 problem+json before the body
is read, and nothing runs."""

import asyncio
import json

import pytest
from aiohttp import web
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


async def raw_request(client, head: str, *parts: bytes, pause: float = 0.0
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a request's head and then `parts` of its body, `pause` seconds apart; the connection's two ends."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(head.encode())
    for part in parts:
        await writer.drain()
        await asyncio.sleep(pause)
        writer.write(part)
    await writer.drain()
    return reader, writer


async def test_a_chunk_that_cannot_be_parsed_is_a_408_once_the_body_wait_is_over(client, sqlite_database,
                                                                                   monkeypatch):
    # given a body may take half a second to arrive; when a chunked body's second line is not a chunk size
    monkeypatch.setattr("intake.bodies.BODY_WAIT_SECONDS", 0.5)
    reader, writer = await raw_request(client, "POST /v1/accounts HTTP/1.1\r\nHost: x\r\n"
                                               f"Authorization: Bearer {OPERATOR_KEY}\r\n"
                                               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                                               b'{"name":"zz\r\n', pause=0.5)

    # then the answer comes when the wait is over, not when the client gives up, and nothing was created
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in head
    assert count(sqlite_database, Account) == 1


async def test_a_client_that_hangs_up_mid_body_is_its_own_doing_not_a_server_error(settings, sqlite_database,
                                                                                    fake_broker, caplog):
    # given the app served as `creditq web` serves it: a handler goes on when its client hangs up
    runner = web.AppRunner(init_app(settings, database=sqlite_database, broker=fake_broker), handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level("INFO")

    # when a client announces 100 bytes of body, sends 12 and hangs up
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/accounts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_KEY}\r\n"
                 'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":"zz"'.encode())
    await writer.drain()
    writer.close()
    for _ in range(50):
        if "went away" in caplog.text:
            break
        await asyncio.sleep(0.1)
    await runner.cleanup()

    # then it is logged as the client's going away, no error is, and nothing was created
    assert "went away before its body was complete" in caplog.text
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert count(sqlite_database, Account) == 0
