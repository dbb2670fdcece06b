"""Enqueueing from the event loop: the broker's Redis calls run in a thread, never on the loop."""

import asyncio

import dramatiq


class Enqueuer:
    """Sends actor messages by name, binding to the workers' broker on first use."""

    def __init__(self, broker: dramatiq.Broker | None = None):
        self._broker = broker

    @property
    def broker(self) -> dramatiq.Broker:
        if self._broker is None:
            import workers  # declares every actor on the broker at REDIS_URL

            self._broker = workers.broker
        return self._broker

    async def send(self, actor_name: str, *args, delay_ms: int | None = None) -> None:
        await asyncio.to_thread(self.send_blocking, actor_name, *args, delay_ms=delay_ms)

    def send_blocking(self, actor_name: str, *args, delay_ms: int | None = None) -> None:
        """For code already off the loop (in a thread), so it needs no second hop to one."""
        self.broker.get_actor(actor_name).send_with_options(args=args, delay=delay_ms)
