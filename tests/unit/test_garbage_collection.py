"""shared.garbage_collection: what a process made at startup is left alone; garbage made later is still collected."""

import gc
import weakref

import pytest

from shared.garbage_collection import YOUNG_GENERATION_THRESHOLD, freeze_startup_heap


@pytest.fixture
def restored_collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class Node:
    def __init__(self):
        self.other = None


def test_startup_objects_are_frozen_and_cycles_made_afterwards_are_still_collected(restored_collector):
    # given a process that has started (its imports and objects are there)
    startup = Node()

    # when it freezes its startup heap
    freeze_startup_heap()

    # then what it made is out of the collector's walks, and the young generation is collected less often
    assert gc.get_freeze_count() > 0 and gc.get_threshold()[0] == YOUNG_GENERATION_THRESHOLD
    assert not gc.is_tracked(startup) or startup not in gc.get_objects()
    # and a reference cycle made afterwards is garbage the collector still finds
    first, second = Node(), Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is None
