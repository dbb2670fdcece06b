"""A worker process drains once, however many times it is told to stop."""

import signal

import pytest

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def dramatiqs_handlers():
    """What dramatiq's worker process installs before it boots: a handler for each stop signal, here one that
    records the signals it was called with."""
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    told: list[int] = []
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda number, _frame: told.append(number))
    yield told
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_only_the_first_stop_signal_reaches_dramatiqs_handler(fake_broker, dramatiqs_handlers, signum):
    from workers.stop_signal import StopOnce

    # given a booted worker process
    StopOnce().after_process_boot(fake_broker)

    # when it is told to stop by every process of its group, then by its parent passing its own on, then again
    signal.raise_signal(signum)
    signal.raise_signal(signal.SIGTERM)
    signal.raise_signal(signum)

    # then dramatiq stops it once (a drain), and never takes a later signal for its "kill at once"
    assert dramatiqs_handlers == [signum]
