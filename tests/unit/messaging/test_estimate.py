"""One pricing path: the live estimate, and the charge settlement makes from Twilio's num_segments."""

import json

import pytest

from shared.errors import ValidationFailed
from shared.messaging.estimate import Charge, charge_for, estimate_message, sender_type_of
from shared.messaging.rates import BUNDLED_RATE_CARD, load_rate_card, parse_rate_card
from shared.models import Account, PhoneNumber

US = load_rate_card(BUNDLED_RATE_CARD)
TWO_SEGMENTS = "a" * 161


def card_with_carrier_fee(fee: str):
    data = json.loads(BUNDLED_RATE_CARD.read_text())
    data["countries"]["US"]["carrier_fees"] = {"sms": fee, "mms": fee}
    return parse_rate_card(data, source="test")


class TestChargeFor:
    @pytest.mark.parametrize(
        ("segments", "sender_type", "usage"),
        [(1, "long_code", 1000), (3, "long_code", 3000), (1, "toll_free", 1500), (3, "toll_free", 4500),
         (2, "short_code", 2000)],
    )
    def test_sms_is_segments_times_the_rate(self, segments, sender_type, usage):
        assert charge_for(segments, country="US", sender_type=sender_type, channel="sms", rate_card=US) == (usage, 0)

    @pytest.mark.parametrize("segments", [1, 4, 10])
    def test_mms_is_per_message_whatever_twilio_counts(self, segments):
        assert charge_for(segments, country="US", sender_type="long_code", channel="mms", rate_card=US) == (2000, 0)

    def test_nothing_sent_costs_nothing(self):
        assert charge_for(0, country="US", sender_type="long_code", channel="sms", rate_card=US) == (0, 0)

    def test_carrier_fee_is_its_own_amount_per_segment(self):
        card = card_with_carrier_fee("0.25")

        charge = charge_for(3, country="US", sender_type="long_code", channel="sms", rate_card=card)

        assert charge == Charge(usage=3000, carrier_fee=750)

    def test_negative_segments_are_a_bug(self):
        with pytest.raises(ValueError):
            charge_for(-1, country="US", sender_type="long_code", channel="sms", rate_card=US)


class TestEstimate:
    def test_one_short_sms(self):
        estimate = estimate_message("Hello!", rate_card=US)

        assert (estimate.channel, estimate.encoding, estimate.segments, estimate.characters) == ("sms", "GSM-7", 1, 6)
        assert (estimate.credits_per_recipient, estimate.recipients, estimate.credits_total) == (1000, 1, 1000)

    def test_a_group_is_priced_per_recipient(self):
        estimate = estimate_message(TWO_SEGMENTS, to=["+14155550100", "+12125551234", "+1 (646) 555-0199"],
                                    rate_card=US)

        assert (estimate.segments, estimate.credits_per_recipient, estimate.recipients, estimate.credits_total) == (
            2, 2000, 3, 6000)

    def test_a_recipient_count_is_priced_in_the_home_country(self):
        estimate = estimate_message(TWO_SEGMENTS, recipients=100_000, sender_type="toll_free", rate_card=US)

        assert (estimate.credits_per_recipient, estimate.credits_total) == (3000, 300_000_000)

    def test_to_and_an_equal_recipient_count_agree(self):
        assert estimate_message("hi", to=["+14155550100"], recipients=1, rate_card=US).recipients == 1

    def test_toll_free_costs_one_and_a_half_credits_per_segment(self):
        estimate = estimate_message("Hi", to=["+14155550100"], sender_type="toll_free", rate_card=US)

        assert estimate.credits_total == 1500

    def test_ucs2_reports_what_forced_it(self):
        estimate = estimate_message("Café ☕ " + "a" * 70, rate_card=US)

        assert (estimate.encoding, estimate.segments, estimate.non_gsm_characters) == ("UCS-2", 2, ("☕",))
        assert estimate.credits_total == 2000

    def test_smart_encoding_is_passed_through(self):
        body = "“" + "a" * 148 + "”"

        assert estimate_message(body, rate_card=US).credits_total == 3000
        assert estimate_message(body, smart_encoding=True, rate_card=US).credits_total == 1000

    def test_a_body_that_smart_encoding_empties_is_refused_like_an_empty_one(self):
        # given a body of zero-width characters only, which Smart Encoding drops
        body = "\u200b\u200c\ufeff"

        # when / then
        with pytest.raises(ValidationFailed) as refused:
            estimate_message(body, smart_encoding=True, rate_card=US)
        assert "empty" in refused.value.errors["body"]
        assert estimate_message(body, rate_card=US).segments == 1  # sent as is, they are UCS-2 text

    def test_mms_is_per_recipient_not_per_segment(self):
        estimate = estimate_message("a" * 800, to=["+14155550100", "+12125551234"],
                                    media_urls=["https://example.com/house.jpg"], rate_card=US)

        assert (estimate.channel, estimate.segments) == ("mms", 1)
        assert (estimate.credits_per_recipient, estimate.credits_total) == (2000, 4000)

    def test_media_without_text_is_an_mms(self):
        estimate = estimate_message("", media_urls=["https://example.com/flyer.png"], rate_card=US)

        assert (estimate.channel, estimate.credits_total) == ("mms", 2000)

    def test_the_longest_body(self):
        estimate = estimate_message("a" * 1600, rate_card=US)

        assert (estimate.segments, estimate.credits_total) == (11, 11_000)

    def test_carrier_fees_are_included_so_a_hold_covers_them(self):
        estimate = estimate_message(TWO_SEGMENTS, recipients=2, rate_card=card_with_carrier_fee("0.1"))

        assert (estimate.credits_per_recipient, estimate.credits_total) == (2200, 4400)

    def test_the_estimate_is_charge_for_times_recipients(self):
        estimate = estimate_message("ç" * 200, recipients=7, sender_type="toll_free", rate_card=US)

        charge = charge_for(estimate.segments, country="US", sender_type="toll_free", channel="sms", rate_card=US)
        assert estimate.credits_total == 7 * sum(charge)

    def test_as_dict_is_the_api_shape_with_credit_strings(self):
        estimate = estimate_message("Hi ☕", recipients=3, sender_type="toll_free", rate_card=US)

        assert estimate.as_dict() == {
            "characters": 4, "encoding": "UCS-2", "segments": 1, "credits_per_recipient": "1.5", "recipients": 3,
            "credits_total": "4.5", "non_gsm_characters": ["☕"], "channel": "sms", "sender_type": "toll_free",
        }


class TestBadInput:
    @pytest.mark.parametrize(
        ("kwargs", "field", "mentions"),
        [
            ({"body": ""}, "body", "empty"),
            ({"body": "   \n"}, "body", "empty"),
            ({"body": "a" * 1601}, "body", "1,601 characters"),
            ({"body": "ç" * 1601}, "body", "1,600"),
            ({"body": None}, "body", "required"),
            ({"body": 42}, "body", "string"),
            ({"to": ["+1415555"]}, "to[0]", "not a valid phone number"),
            ({"to": ["+14155550100", "hello"]}, "to[1]", "international format"),
            ({"to": ["+442071838750"]}, "to[0]", "GB"),
            ({"to": []}, "to", "non-empty"),
            ({"to": "+14155550100"}, "to", "list"),
            ({"recipients": 0}, "recipients", "whole number"),
            ({"recipients": True}, "recipients", "whole number"),
            ({"recipients": "3"}, "recipients", "whole number"),
            ({"to": ["+14155550100"], "recipients": 2}, "recipients", "one or the other"),
            ({"sender_type": "alphanumeric"}, "sender_type", "long_code"),
            ({"channel": "fax"}, "channel", "sms, mms"),
            ({"channel": "sms", "media_urls": ["https://example.com/a.jpg"]}, "media_urls", "mms"),
            ({"media_urls": ["https://example.com/a.jpg"] * 11}, "media_urls", "at most 10"),
            ({"media_urls": ["ftp://example.com/a.jpg"]}, "media_urls", "http"),
            ({"media_urls": "https://example.com/a.jpg"}, "media_urls", "list"),
        ],
    )
    def test_names_the_offending_field(self, kwargs, field, mentions):
        arguments = {"body": "Hello", **kwargs}
        body = arguments.pop("body")

        with pytest.raises(ValidationFailed) as raised:
            estimate_message(body, rate_card=US, **arguments)

        assert field in raised.value.errors
        assert mentions in raised.value.errors[field]
        assert field in str(raised.value)

    def test_every_bad_field_is_reported_at_once(self):
        with pytest.raises(ValidationFailed) as raised:
            estimate_message("", to=["nope", "+14155550100", "+1415"], rate_card=US)

        assert set(raised.value.errors) == {"body", "to[0]", "to[2]"}


class TestSenderType:
    @pytest.fixture
    def session(self, sqlite_database):
        with sqlite_database.unit_of_work() as session:
            session.add_all([Account(id="acct_a", name="A"), Account(id="acct_b", name="B")])
            session.flush()
            session.add_all([
                PhoneNumber(account_id="acct_a", phone="+18005550100", type="toll_free"),
                PhoneNumber(account_id="acct_b", phone="+14155550100", type="long_code"),
                PhoneNumber(account_id="acct_b", phone="+18885550100", type="toll_free"),
                PhoneNumber(account_id="acct_b", phone="12345", type="short_code"),
            ])
            session.flush()
            yield session

    def test_the_accounts_own_number_gives_its_type(self, session):
        assert sender_type_of(session, "+18005550100", account_id="acct_a") == "toll_free"
        assert sender_type_of(session, "+1 (800) 555-0100", account_id="acct_a") == "toll_free"
        assert sender_type_of(session, "12345", account_id="acct_b") == "short_code"

    def test_another_accounts_number_is_priced_as_a_long_code(self, session):
        assert sender_type_of(session, "+18885550100", account_id="acct_a") == "long_code"

    def test_an_unknown_number_is_priced_as_a_long_code(self, session):
        assert sender_type_of(session, "+19995550100", account_id="acct_a") == "long_code"

    def test_the_operator_sees_every_accounts_numbers(self, session):
        assert sender_type_of(session, "+18885550100", account_id=None) == "toll_free"


def test_a_list_of_numbers_is_capped_and_a_count_prices_more():
    numbers = ["+14155550100"] * 10_001

    with pytest.raises(ValidationFailed) as refused:
        estimate_message("hi", to=numbers, rate_card=US)

    assert "at most 10,000" in refused.value.errors["to"]
    assert estimate_message("hi", recipients=10_001, rate_card=US).credits_total == 10_001_000
