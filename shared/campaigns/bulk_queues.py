"""The queues a campaign's texts wait on: one of four, by account, so that one account's big campaign never stands
between another account's campaign and the workers.

A worker fetches from every queue it serves on a thread of its own and takes the jobs it fetched in the order they
came, so the queues with work share the worker's threads. The jobs within one queue go first in, first out: two
accounts whose ids hash alike (one pair in four) share a queue, as an account's own campaigns do. Single texts wait
on `send` apart from all of these, and a worker takes them first (the actors' priority).
"""

import zlib

BULK_QUEUES = ("send_bulk", "send_bulk_1", "send_bulk_2", "send_bulk_3")
BULK_ACTORS = ("send_campaign_message", "send_campaign_message_1", "send_campaign_message_2",
               "send_campaign_message_3")  # one on each queue, in the same order


def bulk_actor_for(account_id: str) -> str:
    """The actor that sends the account's campaign texts, on the account's queue."""
    return BULK_ACTORS[_shard(account_id)]


def bulk_queue_for(account_id: str) -> str:
    """The queue the account's campaign texts wait on."""
    return BULK_QUEUES[_shard(account_id)]


def _shard(account_id: str) -> int:
    return zlib.crc32(account_id.encode()) % len(BULK_QUEUES)
