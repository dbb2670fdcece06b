"""Group commit for threads: what comes while a batch is written goes in the next, and a failure is its item's."""

import threading
import time

import pytest

from shared.thread_group_commit import ThreadGroupCommit


class Writer:
    """Writes batches slowly enough that others queue meanwhile; refuses any batch holding a "poison" item."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.lock = threading.Lock()

    def __call__(self, items: list[str]) -> list[str]:
        with self.lock:
            self.batches.append(list(items))
        if "poison" in items:
            raise ValueError("poison")
        time.sleep(0.02)
        return [item.upper() for item in items]


def submit_all(group: ThreadGroupCommit, items: list[str], *,
               raising: type[BaseException] = ValueError) -> dict[str, object]:
    """Each item submitted by a thread of its own, all at once: its answer, or what it raised."""
    answers: dict[str, object] = {}

    def submit(item: str) -> None:
        try:
            answers[item] = group.submit(item)
        except raising as error:
            answers[item] = error

    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    return answers


def test_a_lone_item_is_written_at_once_in_a_batch_of_its_own():
    writer = Writer()

    assert ThreadGroupCommit(writer, max_batch=8).submit("a") == "A"
    assert writer.batches == [["a"]]


def test_items_that_come_while_a_batch_is_written_are_written_together_each_getting_its_own_answer():
    # given a writer busy for 20 ms a batch, and 24 threads submitting at once
    writer = Writer()
    items = [f"item{n}" for n in range(24)]

    # when they submit
    answers = submit_all(ThreadGroupCommit(writer, max_batch=8), items)

    # then each got its own answer, every item was written once, in fewer batches than items, none above 8
    assert answers == {item: item.upper() for item in items}
    written = [item for batch in writer.batches for item in batch]
    assert sorted(written) == sorted(items)
    assert len(writer.batches) < len(items) and max(map(len, writer.batches)) <= 8


def test_a_batch_that_fails_is_written_again_item_by_item_and_only_the_bad_item_fails():
    # given a writer that refuses any batch holding "poison"; the first item keeps it busy while the rest queue
    writer = Writer()
    group = ThreadGroupCommit(writer, max_batch=16)
    first = threading.Thread(target=group.submit, args=("first",))
    first.start()
    time.sleep(0.005)

    # when "poison" is submitted with others, all of them queued behind the first batch
    answers = submit_all(group, ["poison", "b", "c", "d"])
    first.join()

    # then the batch holding it failed, each of its items was written again alone, and only "poison" raised
    assert isinstance(answers.pop("poison"), ValueError)
    assert answers == {"b": "B", "c": "C", "d": "D"}
    assert ["poison"] in writer.batches and ["b"] in writer.batches


def test_after_a_lone_failure_the_next_item_is_still_written():
    group = ThreadGroupCommit(Writer(), max_batch=4)

    with pytest.raises(ValueError):
        group.submit("poison")
    assert group.submit("after") == "AFTER"


class Interrupted(BaseException):
    """As dramatiq's time limit raises into a worker thread."""


def test_a_writer_interrupted_mid_batch_strands_no_other_item():
    # given a writer interrupted whenever its batch holds "interrupt" (as a time limit fires in the thread writing)
    def write(items: list[str]) -> list[str]:
        time.sleep(0.02)
        if "interrupt" in items and len(items) > 1:
            raise Interrupted()
        return [item.upper() for item in items]

    group = ThreadGroupCommit(write, max_batch=16)
    first = threading.Thread(target=group.submit, args=("first",))
    first.start()
    time.sleep(0.005)

    # when "interrupt" and two others queue behind the first batch and their batch is interrupted
    answers = submit_all(group, ["interrupt", "b", "c"], raising=Interrupted)
    first.join(timeout=5)

    # then no thread hangs (each answered within submit_all's wait): whoever wrote the interrupted batch raised, and
    # every other item was written alone
    assert len(answers) == 3
    interrupted = [item for item, answer in answers.items() if isinstance(answer, Interrupted)]
    assert len(interrupted) == 1
    assert {item: answer for item, answer in answers.items() if item not in interrupted} == {
        item: item.upper() for item in ("interrupt", "b", "c") if item not in interrupted}
    assert group.submit("after") == "AFTER"
