"""A campaign's pricer: what each body costs to its number, the same whether priced first or again."""

from shared.campaigns.creation import Pricer
from shared.messaging.rates import parse_rate_card

RATES = {"mms": "2", "call_outgoing": "1", "voice_broadcast": "1", "answering_machine_detection": "1",
         "call_forwarding": "1", "voicemail": "1", "transcription": "1", "phone_number": "100"}
CARD = parse_rate_card({"name": "two countries", "home_country": "US", "countries": {
    "US": {"rates": {**RATES, "sms": {"long_code": "1", "toll_free": "1.5", "short_code": "2.5"}}},
    "GB": {"rates": {**RATES, "sms": {"long_code": "4", "toll_free": "4", "short_code": "4"}}}}}, source="test")
US, GB = "+14155550100", "+442079460958"
SHORT, LONG, EMOJI = "Hi Ann", "x" * 200, "Hi 🙂"


def test_each_body_is_priced_by_its_own_segments_encoding_and_country_however_often_it_comes():
    # given one pricer for a long-code sender
    pricer = Pricer(CARD, "long_code")

    # when bodies of one and two segments, GSM and UCS-2, go to each country, twice over in mixed order
    cases = [(SHORT, US), (LONG, US), (SHORT, GB), (LONG, GB), (EMOJI, GB), (EMOJI, US)]
    first = [pricer.price(body, number) for body, number in cases]
    again = [pricer.price(body, number) for body, number in reversed(cases)][::-1]

    # then each is its segments times its country's rate (millicredits), the second pass as the first
    assert [(p.segments, p.encoding, p.credits) for p in first] == [
        (1, "GSM-7", 1000), (2, "GSM-7", 2000), (1, "GSM-7", 4000), (2, "GSM-7", 8000), (1, "UCS-2", 4000),
        (1, "UCS-2", 1000)]
    assert again == first
