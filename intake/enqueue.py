"""Enqueueing from the event loop: the broker's calls (Redis or RabbitMQ) run in a thread, never on the loop."""

import asyncio

import dramatiq

from shared.broker import enqueue_many


class Enqueuer:
    """Sends actor messages by name, binding to the workers' broker on first use."""

    def __init__(self, broker: dramatiq.Broker | None = None):
        self._broker = broker

    @property
    def broker(self) -> dramatiq.Broker:
        if self._broker is None:
            import workers  # declares every actor on the broker the environment names

            self._broker = workers.broker
        return self._broker

    async def send(self, actor_name: str, *args, delay_ms: int | None = None) -> None:
        await asyncio.to_thread(self.send_many_blocking, actor_name, [args], delays_ms=[delay_ms])

    def send_many_blocking(self, actor_name: str, args_list: list[tuple], *,
                           delays_ms: list[int | None] | None = None) -> None:
        """Jobs of one actor (in one round trip on Redis), for code already off the loop (in a thread)."""
        enqueue_many(self.broker.get_actor(actor_name), args_list, delays=delays_ms)
