"""X-Twilio-Signature: Twilio's HMAC over the URL with or without its port, as twilio's RequestValidator accepts it."""

import pytest
from twilio.request_validator import RequestValidator

from shared.twilio.signatures import Credentials, SignedForm

CREDENTIALS = Credentials("AC" + "1" * 32, "token-one")
PARAMS = {"AccountSid": CREDENTIALS.account_sid, "MessageSid": "SM" + "2" * 32, "MessageStatus": "delivered"}


def signed(url: str, *, signed_url: str | None = None, token: str = CREDENTIALS.auth_token,
           params: dict = PARAMS) -> SignedForm:
    return SignedForm(url, params, RequestValidator(token).compute_signature(signed_url or url, params))


@pytest.mark.parametrize(("url", "signed_url"), [
    ("https://api.example.com/webhooks/twilio/status", None),
    ("https://api.example.com/webhooks/twilio/status", "https://api.example.com:443/webhooks/twilio/status"),
    ("https://api.example.com:443/webhooks/twilio/status", None),
    ("https://api.example.com:443/webhooks/twilio/status", "https://api.example.com/webhooks/twilio/status"),
    ("http://127.0.0.1:8080/webhooks/twilio/status?x=1", None),
])
def test_a_signature_over_the_url_with_or_without_its_port_is_accepted_as_twilios_validator_does(url, signed_url):
    # Given a form Twilio signed over the URL it was sent to, written with its port or without
    form = signed(url, signed_url=signed_url)
    # Then it is accepted, as twilio's own validator accepts it
    assert RequestValidator(CREDENTIALS.auth_token).validate(url, PARAMS, form.signature)
    assert form.signed_by(CREDENTIALS)


@pytest.mark.parametrize("forged", [
    dict(token="another-token"),
    dict(signed_url="https://api.example.com/webhooks/twilio/other"),
    dict(params={**PARAMS, "MessageStatus": "undelivered"}),
])
def test_a_signature_under_another_token_over_another_url_or_other_fields_is_refused(forged):
    # Given a form whose signature was made with another token, over another URL, or over other fields
    form = signed("https://api.example.com/webhooks/twilio/status", **forged)
    if "params" in forged:  # the signature over the changed fields, sent with the original ones
        form = SignedForm(form.url, PARAMS, form.signature)
    # Then it is refused, as twilio's own validator refuses it
    assert not RequestValidator(CREDENTIALS.auth_token).validate(form.url, PARAMS, form.signature)
    assert not form.signed_by(CREDENTIALS)


def test_a_form_naming_another_account_or_unsigned_is_refused_whatever_its_hmac():
    form = signed("https://api.example.com/webhooks/twilio/status")
    assert not form.signed_by(Credentials("AC" + "3" * 32, CREDENTIALS.auth_token))
    assert not SignedForm(form.url, form.params, None).signed_by(CREDENTIALS)
    assert not form.signed_by(None)


def test_the_url_as_written_costs_one_hmac(monkeypatch):
    # Given a form signed over its URL as written (no port), and a count of the HMACs computed from then on
    form = signed("https://api.example.com/webhooks/twilio/status")
    computed = []
    compute = RequestValidator.compute_signature
    monkeypatch.setattr(RequestValidator, "compute_signature", lambda validator, uri, params, *args: (
        computed.append(uri), compute(validator, uri, params, *args))[1])
    # When it is checked
    assert form.signed_by(CREDENTIALS)
    # Then one HMAC was computed, over that URL (twilio's validate computes one more, with the port)
    assert computed == ["https://api.example.com/webhooks/twilio/status"]
