"""The garbage collector's settings for the long-running processes (web, worker, scheduler).

CPython collects its youngest generation every 700 allocations of containers, and every so often all
of them: in a process that has imported SQLAlchemy, dramatiq, twilio and phonenumbers, a full
collection walks hundreds of thousands of objects made at startup that will never be garbage. A
campaign's 100,000 parsed recipients, or a callback batch's rows, pay for those walks again and again.
So once a process has started (a worker process: after its fork, once warmed up), what it made is
frozen (never walked again), and the young generation is collected ten times less often. Reference
cycles made afterwards are still found. `creditq worker` (and `creditq web` with several processes)
also freezes what it imports before forking its processes: a walk would write to the pages they share
and copy them into each.
"""

import gc
import importlib

YOUNG_GENERATION_THRESHOLD = 7_000


def freeze_startup_heap() -> None:
    """Call once a process has imported and built what it runs with, before it serves."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def import_and_freeze_before_fork(*modules: str) -> None:
    """In a parent about to fork its processes: import `modules` and freeze, so the processes share those pages
    instead of each importing its own copy, and no collection in one writes to (and so copies) them. Nothing may
    connect at import: each process opens its own pools and clients after the fork."""
    for module in modules:
        importlib.import_module(module)
    freeze_startup_heap()
