"""Put back, when a worker stops, the jobs its Redis consumer fetched but had not yet handed to a thread.

dramatiq's Redis consumer fetches a batch into a cache and hands it over one job at a time. A consumer thread told to
stop between two hand-overs leaves the rest of that batch acquired by the stopping process until its heartbeat lapses
and another worker's maintenance happens to put them back, minutes later. dramatiq itself puts back the jobs waiting
in the work queue (Worker.stop) and the delayed ones (ConsumerThread.close): these are the ones left.
"""

from dramatiq import Message
from dramatiq.middleware import Middleware


class PutBackPrefetched(Middleware):
    def before_consumer_thread_shutdown(self, broker, thread) -> None:
        consumer = thread.consumer
        fetched = getattr(consumer, "message_cache", None)  # only the Redis consumer keeps one
        if not fetched:
            return
        consumer.requeue([Message.decode(data) for data in fetched if data is not None])
        consumer.message_cache = []
