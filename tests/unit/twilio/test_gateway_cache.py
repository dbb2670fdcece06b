"""The process's Twilio gateways are bounded: the least recently used credentials (a rotated token's) go first."""

from shared.twilio.gateway import GatewayCache

SIM = ("http://127.0.0.1:1", "http://127.0.0.1:2/webhooks/twilio/status")


def test_past_its_bound_the_least_recently_used_gateway_is_dropped():
    # given a cache of two gateways, the old token's used before the other account's
    cache = GatewayCache(max_entries=2)
    old_token = cache.get(("AC1", "old-token", *SIM))
    other = cache.get(("AC2", "token", *SIM))
    assert cache.get(("AC1", "old-token", *SIM)) is old_token
    cache.get(("AC2", "token", *SIM))

    # when the first account's token is rotated and its new credentials are used
    rotated = cache.get(("AC1", "new-token", *SIM))

    # then the new token has its own gateway, the least recently used (the old token's) was dropped, the other kept
    assert rotated is not old_token
    assert cache.get(("AC2", "token", *SIM)) is other
    assert cache.get(("AC1", "old-token", *SIM)) is not old_token
