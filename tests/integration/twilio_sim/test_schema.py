"""The simulator's Messages and Account responses checked against Twilio's own OpenAPI description.

So the simulator cannot drift from the real API: every field Twilio documents is present,
no field Twilio does not document is added, and each value has the documented type.
"""

from __future__ import annotations

import json
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests

from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _simulator_server,
    background_loop,
    simulator,
)

SPEC_PATH = Path(__file__).resolve().parents[3] / ".." / "shared" / "twilio" / "twilio_api_v2010.json"
MESSAGES = "/2010-04-01/Accounts/{AccountSid}/Messages.json"
MESSAGE = "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"
ACCOUNT = "/2010-04-01/Accounts/{Sid}.json"
RFC_2822_FIELDS = ("date_created", "date_updated", "date_sent", "start_time", "end_time")
FINAL = {"delivered", "undelivered", "failed"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    if not SPEC_PATH.exists():
        pytest.skip(f"Twilio's OpenAPI description is not at {SPEC_PATH.resolve()}")
    return json.loads(SPEC_PATH.read_text())


def response_schema(spec: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    operation = spec["paths"][path][method]
    openapi_schema = operation["responses"][status]["content"]["application/json"]["schema"]
    return as_json_schema(openapi_schema, spec)


def as_json_schema(node: Any, spec: dict[str, Any]) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: inline local $refs, turn ``nullable`` into null types."""
    if isinstance(node, list):
        return [as_json_schema(item, spec) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return as_json_schema(target, spec)
    schema = {key: as_json_schema(value, spec) for key, value in node.items() if key != "nullable"}
    if node.get("nullable"):
        if "type" in schema:
            schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def assert_matches_twilio(resource: dict[str, Any], schema: dict[str, Any]) -> None:
    jsonschema.validate(resource, schema)
    assert set(resource) == set(schema["properties"]), "fields differ from Twilio's"
    for field in RFC_2822_FIELDS:
        if resource.get(field) is not None:
            assert parsedate_to_datetime(resource[field]).utcoffset().total_seconds() == 0


def twilio_request(simulator, method: str, path: str, **kwargs: Any) -> requests.Response:
    """The raw wire exchange, as the twilio package would make it."""
    return requests.request(
        method, simulator.url + path, auth=(simulator.account_sid, simulator.auth_token), timeout=10, **kwargs
    )


def wait_until_final(simulator, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(m["status"] not in FINAL for m in simulator.sent()["messages"]):
        assert time.monotonic() < deadline, "messages never reached a final status"
        time.sleep(0.01)


def test_the_conversion_honours_nullable(spec):
    # given the Message schema, whose fields are nullable in OpenAPI 3.0 terms
    schema = response_schema(spec, MESSAGE, "get", "200")

    # when a null is given for a nullable field and for a field that is not nullable
    # then only the nullable one is accepted
    jsonschema.validate({"price": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"status": None}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"num_segments": 2}, schema)


def test_create_fetch_and_list_responses_match_twilios_schemas(simulator, spec):
    # given creates in every shape: SMS, MMS, via a Messaging Service, and one that fails
    account = f"/2010-04-01/Accounts/{simulator.account_sid}"
    creates = [
        {"To": "+15558675310", "From": "+15005550006", "Body": "plain"},
        {"To": "+15558675310", "From": "+15005550006", "Body": "pic", "MediaUrl": ["https://example.com/a.png"]},
        {"To": "+15558675310", "MessagingServiceSid": "MG" + "b" * 32, "Body": "svc"},
    ]
    created = [twilio_request(simulator, "post", f"{account}/Messages.json", data=form) for form in creates]
    simulator.configure(outcomes={"failed": 1})
    created.append(
        twilio_request(simulator, "post", f"{account}/Messages.json", data={**creates[0], "Body": "fails"})
    )

    # when each is fetched once its life is over, and they are listed
    wait_until_final(simulator)
    fetches = [twilio_request(simulator, "get", f"{account}/Messages/{m.json()['sid']}.json") for m in created]
    listing = twilio_request(simulator, "get", f"{account}/Messages.json?PageSize=2")

    # then each response matches the schema Twilio publishes for it
    for create in created:
        assert create.status_code == 201
        assert_matches_twilio(create.json(), response_schema(spec, MESSAGES, "post", "201"))
    for fetch in fetches:
        assert fetch.status_code == 200
        assert_matches_twilio(fetch.json(), response_schema(spec, MESSAGE, "get", "200"))
    assert {fetch.json()["status"] for fetch in fetches} == {"delivered", "failed"}
    list_schema = response_schema(spec, MESSAGES, "get", "200")
    page = listing.json()
    jsonschema.validate(page, list_schema)
    assert set(page) == set(list_schema["properties"])
    for resource in page["messages"]:
        assert_matches_twilio(resource, list_schema["properties"]["messages"]["items"])


def test_account_fetches_match_twilios_schema(simulator, spec):
    # given the main account and a subaccount of it
    sub = simulator.add_account(friendly_name="Grace Church")

    # when each fetches itself (as creditq does to prove credentials), and the parent its subaccount
    fetches = [
        twilio_request(simulator, "get", f"/2010-04-01/Accounts/{simulator.account_sid}.json"),
        requests.get(f"{simulator.url}/2010-04-01/Accounts/{sub['sid']}.json", auth=(sub["sid"], sub["auth_token"]),
                     timeout=10),
        twilio_request(simulator, "get", f"/2010-04-01/Accounts/{sub['sid']}.json"),
    ]

    # then each answer is the Account resource Twilio publishes
    schema = response_schema(spec, ACCOUNT, "get", "200")
    for fetch in fetches:
        assert fetch.status_code == 200
        jsonschema.validate(fetch.json(), schema)
        assert set(fetch.json()) == set(schema["properties"]), "fields differ from Twilio's"
        for field in ("date_created", "date_updated"):
            assert parsedate_to_datetime(fetch.json()[field]).utcoffset().total_seconds() == 0
    assert [fetch.json()["owner_account_sid"] for fetch in fetches] == [simulator.account_sid] * 3


def test_error_bodies_have_twilios_error_fields(simulator):
    # given a request Twilio rejects
    response = twilio_request(simulator, "get", f"/2010-04-01/Accounts/{simulator.account_sid}/Messages/SM{'0' * 32}.json")

    # then the body is Twilio's error shape
    body = response.json()
    assert {"code", "message", "more_info", "status"} <= set(body)
    assert body["status"] == response.status_code == 404
    assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}"
