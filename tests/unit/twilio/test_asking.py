"""A sweep's time for asking Twilio: each loop's own, its first ask whatever the time, none once Twilio struggled."""

from shared.twilio.asking import Asking


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_asks_until_its_time_is_up_and_the_next_loop_has_time_of_its_own():
    # given five seconds a loop, and asks that take two seconds each
    clock = Clock()
    asking = Asking(5.0, clock=clock)

    def ask_all(items):
        asked = []
        for item in asking.each(items):
            asked.append(item)
            clock.now += 2.0
        return asked

    # when two loops ask about five records each
    first, second = ask_all(range(5)), ask_all("abcde")

    # then each asked until its five seconds had gone (the third ask began at 4 s)
    assert (first, second) == ([0, 1, 2], ["a", "b", "c"])


def test_a_loop_whose_time_is_gone_at_once_still_asks_its_first():
    clock = Clock()
    asking = Asking(0.0, clock=clock)
    assert list(asking.each(range(3))) == [0]


def test_once_twilio_struggled_no_loop_asks_anything_more():
    # given a loop whose second ask Twilio failed with a "try again later"
    asking = Asking(5.0, clock=Clock())
    asked = []
    for item in asking.each(range(5)):
        asked.append(item)
        if item == 1:
            asking.struggled()

    # then that loop stopped there, and the next asks nothing, its first included
    assert (asked, list(asking.each(range(5)))) == ([0, 1], [])
