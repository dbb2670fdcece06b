"""The simulator's voice: Calls through the official client, their progress callbacks on a compressed clock,
AnsweredBy, busy / no-answer / failed, and inbound calls with <Dial>, <Record>, recordings and transcriptions."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from aiohttp import web
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse

from tests.integration.twilio_sim.test_schema import assert_matches_twilio, response_schema, spec  # noqa: F401
from tests.twilio_sim_fixtures import (  # noqa: F401  (fixtures)
    _simulator_server,
    background_loop,
    simulator,
)

CALLER, CALLEE, NUMBER, FORWARD_TO = "+14155550101", "+14155550102", "+14155550103", "+14155550104"
FAST = {"call_minute_ms": 60, "ring_seconds": 1}  # one simulated minute in 60 ms


class VoiceReceiver:
    """Every webhook the simulator POSTs, by path; /voice and /dialed answer the TwiML a test sets."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], str | None]] = []
        self.twiml: dict[str, str] = {}
        self._lock = threading.Lock()
        self.app = web.Application()
        self.app.router.add_post("/{name}", self._receive)
        self.url = ""

    async def _receive(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        with self._lock:
            self.received.append((request.path, form, request.headers.get("X-Twilio-Signature")))
        twiml = self.twiml.get(request.path)
        return web.Response(text=twiml, content_type="text/xml") if twiml else web.Response(status=204)

    def at(self, path: str) -> list[dict[str, str]]:
        with self._lock:
            return [form for received_path, form, _ in self.received if received_path == path]

    def wait_for(self, path: str, until, timeout: float = 10.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until(self.at(path)):
                return self.at(path)
            time.sleep(0.01)
        raise AssertionError(f"{path} never matched; got {self.at(path)}")


@pytest.fixture
def receiver(background_loop) -> VoiceReceiver:
    voice = VoiceReceiver()
    voice.url = background_loop.serve(voice.app)
    return voice


def say(text: str) -> str:
    response = VoiceResponse()
    response.say(text)
    return str(response)


def completed(forms):
    return any(form["CallStatus"] in ("completed", "busy", "no-answer", "failed") for form in forms)


def test_a_call_moves_through_its_progress_callbacks_signed_and_cut_at_its_time_limit(simulator, receiver):
    # given calls that would talk for 5 to 10 minutes, and a time limit of 2 minutes
    simulator.configure(**FAST, call_min_seconds=300, call_max_seconds=600)
    client = simulator.client()

    # when a call is created with every progress event asked for
    call = client.calls.create(to=CALLEE, from_=CALLER, twiml=say("Hello"), time_limit=120,
                               status_callback=f"{receiver.url}/status",
                               status_callback_event=["initiated", "ringing", "answered", "completed"])

    # then it is answered queued, and its callbacks tell its life in order, signed by the account
    assert call.sid.startswith("CA") and call.status == "queued" and call.direction == "outbound-api"
    forms = receiver.wait_for("/status", completed)
    assert [form["CallStatus"] for form in forms] == ["initiated", "ringing", "in-progress", "completed"]
    assert forms[-1]["CallDuration"] == "120" and forms[-1]["Duration"] == "2"
    validator = RequestValidator(simulator.auth_token)
    assert all(validator.validate(f"{receiver.url}/status", form, signature)
               for _, form, signature in receiver.received)
    fetched = client.calls(call.sid).fetch()
    assert (fetched.status, fetched.duration, fetched.price) == ("completed", "120", "-0.02800")


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
def test_a_call_that_is_not_answered_ends_with_no_duration(simulator, receiver, outcome):
    # given every call ends as `outcome`
    simulator.configure(**FAST, call_outcomes={outcome: 1})

    # when a call is placed
    call = simulator.client().calls.create(to=CALLEE, from_=CALLER, twiml=say("Hi"),
                                           status_callback=f"{receiver.url}/status")

    # then only its final callback comes (the default event), with no billable time
    forms = receiver.wait_for("/status", completed)
    assert [(form["CallStatus"], form["CallDuration"]) for form in forms] == [(outcome, "0")]
    assert simulator.client().calls(call.sid).fetch().price == "0.00000"


def test_machine_detection_reports_answered_by_from_its_knob(simulator, receiver):
    # given machine detection says a machine answered
    simulator.configure(**FAST, answered_by={"machine_end_beep": 1})

    # when a call asks for machine detection, and another does not
    detected = simulator.client().calls.create(to=CALLEE, from_=CALLER, twiml=say("Hi"),
                                               machine_detection="DetectMessageEnd",
                                               status_callback=f"{receiver.url}/status")
    plain = simulator.client().calls.create(to=CALLER, from_=CALLEE, twiml=say("Hi"),
                                            status_callback=f"{receiver.url}/status")

    # then only the first says who answered
    forms = receiver.wait_for("/status", lambda forms: len(forms) == 2)
    by_sid = {form["CallSid"]: form for form in forms}
    assert by_sid[detected.sid]["AnsweredBy"] == "machine_end_beep"
    assert "AnsweredBy" not in by_sid[plain.sid]
    assert simulator.client().calls(detected.sid).fetch().answered_by == "machine_end_beep"


def test_out_of_order_delivery_sends_completed_before_ringing(simulator, receiver):
    # given every call's callbacks are delivered out of order
    simulator.configure(**FAST, out_of_order_rate=1)

    # when a call is placed asking for its progress
    simulator.client().calls.create(to=CALLEE, from_=CALLER, twiml=say("Hi"), status_callback=f"{receiver.url}/status",
                                    status_callback_event=["initiated", "ringing", "answered", "completed"])

    # then the final one arrives first
    forms = receiver.wait_for("/status", lambda forms: len(forms) == 4)
    assert [form["CallStatus"] for form in forms] == ["completed", "in-progress", "ringing", "initiated"]


def test_a_create_without_twiml_or_url_is_refused_as_twilio_does(simulator):
    with pytest.raises(TwilioRestException) as refused:
        simulator.client().calls.create(to=CALLEE, from_=CALLER, status_callback="http://127.0.0.1:9/status")
    assert (refused.value.status, refused.value.code) == (400, 21205)


def test_list_filters_by_to_and_status(simulator, receiver):
    # given two calls to different numbers
    simulator.configure(**FAST)
    client = simulator.client()
    first = client.calls.create(to=CALLEE, from_=CALLER, twiml=say("1"), status_callback=f"{receiver.url}/status")
    client.calls.create(to=FORWARD_TO, from_=CALLER, twiml=say("2"), status_callback=f"{receiver.url}/status")
    receiver.wait_for("/status", lambda forms: len(forms) == 2)

    # when they are listed by To and by Status
    # then each filter finds its calls
    assert [call.sid for call in client.calls.list(to=CALLEE)] == [first.sid]
    assert len(client.calls.list(status="completed")) == 2


def test_inbound_call_dials_then_records_a_voicemail_with_its_transcription(simulator, receiver):
    # given a number whose voice URL forwards to a phone for 20 s, then records with transcription
    simulator.configure(**FAST)
    dial = VoiceResponse()
    dial.dial(FORWARD_TO, timeout=20, time_limit=90, action=f"{receiver.url}/dialed")
    record = VoiceResponse()
    record.record(max_length=120, transcribe=True, transcribe_callback=f"{receiver.url}/transcription",
                  recording_status_callback=f"{receiver.url}/recording")
    receiver.twiml = {"/voice": str(dial), "/dialed": str(record)}

    # when someone calls it, the forwarded phone talks for 150 s, then the caller leaves a 30 s message
    trigger = requests.post(f"{simulator.url}/_sim/calls/inbound", timeout=10, json={
        "from": CALLER, "to": NUMBER, "url": f"{receiver.url}/voice", "status_callback": f"{receiver.url}/status",
        "forwarded_seconds": 150, "voicemail_seconds": 30})

    # then the voice URL is asked, the leg is cut at the Dial's timeLimit, and the voicemail is reported
    assert trigger.status_code == 201
    sid = trigger.json()["sid"]
    status = receiver.wait_for("/status", completed)[0]
    voice, dialed = receiver.at("/voice")[0], receiver.at("/dialed")[0]
    assert (voice["CallSid"], voice["Direction"], voice["To"], voice["CallStatus"]) == (sid, "inbound", NUMBER,
                                                                                         "ringing")
    assert (dialed["DialCallStatus"], dialed["DialCallDuration"]) == ("completed", "90")
    recording = receiver.wait_for("/recording", lambda forms: forms)[0]
    transcription = receiver.wait_for("/transcription", lambda forms: forms)[0]
    assert recording["RecordingDuration"] == "30" and recording["CallSid"] == sid
    assert transcription["RecordingSid"] == recording["RecordingSid"]
    assert transcription["TranscriptionText"]
    assert status["CallStatus"] == "completed" and int(status["CallDuration"]) >= 120
    calls = requests.get(f"{simulator.url}/_sim/calls", timeout=10).json()["calls"]
    legs = [call for call in calls if call["parent_call_sid"] == sid]
    assert [(leg["to"], leg["duration"], leg["time_limit"]) for leg in legs] == [(FORWARD_TO, 90, 90)]
    assert [leg.sid for leg in simulator.client().calls.list(parent_call_sid=sid)] == [legs[0]["sid"]]


def test_inbound_call_whose_forward_is_busy_reports_it_to_the_dial_action(simulator, receiver):
    # given a number that forwards, and a forwarded phone that is busy
    simulator.configure(**FAST)
    dial = VoiceResponse()
    dial.dial(FORWARD_TO, timeout=20, action=f"{receiver.url}/dialed")
    receiver.twiml = {"/voice": str(dial)}

    # when someone calls it
    requests.post(f"{simulator.url}/_sim/calls/inbound", timeout=10, json={
        "from": CALLER, "to": NUMBER, "url": f"{receiver.url}/voice", "forwarded_outcome": "busy"})

    # then the action hears busy, with no talk time
    dialed = receiver.wait_for("/dialed", lambda forms: forms)[0]
    assert (dialed["DialCallStatus"], dialed["DialCallDuration"]) == ("busy", "0")


def test_call_resources_match_twilios_schemas(simulator, receiver, spec):  # noqa: F811
    # given a finished call and one still ringing
    simulator.configure(**FAST)
    client = simulator.client()
    account = f"/2010-04-01/Accounts/{simulator.account_sid}"
    done = requests.post(f"{simulator.url}{account}/Calls.json", auth=(simulator.account_sid, simulator.auth_token),
                         data={"To": CALLEE, "From": CALLER, "Twiml": say("Hi"),
                               "StatusCallback": f"{receiver.url}/status"}, timeout=10)
    receiver.wait_for("/status", completed)
    simulator.configure(ring_seconds=600)
    client.calls.create(to=FORWARD_TO, from_=CALLER, twiml=say("Hi"))

    # when they are fetched and listed
    fetched = requests.get(f"{simulator.url}{account}/Calls/{done.json()['sid']}.json",
                           auth=(simulator.account_sid, simulator.auth_token), timeout=10)
    listing = requests.get(f"{simulator.url}{account}/Calls.json?PageSize=1",
                           auth=(simulator.account_sid, simulator.auth_token), timeout=10)

    # then each answer is the Call resource Twilio publishes
    calls_path, call_path = (f"/2010-04-01/Accounts/{{AccountSid}}/Calls{suffix}" for suffix in (".json",
                                                                                                "/{Sid}.json"))
    assert done.status_code == 201
    assert_matches_twilio(done.json(), response_schema(spec, calls_path, "post", "201"))
    assert_matches_twilio(fetched.json(), response_schema(spec, call_path, "get", "200"))
    list_schema = response_schema(spec, calls_path, "get", "200")
    page = listing.json()
    assert set(page) == set(list_schema["properties"])
    for resource in page["calls"]:
        assert_matches_twilio(resource, list_schema["properties"]["calls"]["items"])
    assert page["next_page_uri"] is not None
