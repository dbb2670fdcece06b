"""The broker module `creditq worker` hands to dramatiq: the actors, plus what only a worker process adds — dramatiq's
own Prometheus middleware, the ids on its log lines, its resources built at boot and, when it stops, one drain however
often it is told, and the jobs it fetched put back.

The Prometheus middleware keeps each worker process's metrics in files of a directory (PROMETHEUS_MULTIPROC_DIR)
and serves their sum from a process dramatiq forks for it (`Prometheus.forks`), at dramatiq_prom_host and
dramatiq_prom_port; `creditq worker` sets all three before prometheus_client is first imported, which is when that
library decides to keep its values in files.
"""

from dramatiq.middleware import AgeLimit
from dramatiq.middleware.prometheus import Prometheus

from workers import broker
from workers.log_context import JobLogContext
from workers.prefetched_jobs import PutBackPrefetched
from workers.stop_signal import StopOnce
from workers.warm_up import WarmUp

broker.add_middleware(Prometheus())
# first in, last out: the ids stay bound while the other middleware log about the job (Retries' "Retrying message")
broker.add_middleware(JobLogContext(), before=AgeLimit)
broker.add_middleware(WarmUp())
broker.add_middleware(PutBackPrefetched())
broker.add_middleware(StopOnce())

__all__ = ["broker"]
