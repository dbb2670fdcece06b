"""A sweep's asks of a service: none about a tenant the service struggled for, none at all once it struggled for the
deployment's own; a loop with a time limit asks its first whatever the time, and each loop has its own."""

from shared.asking import Asking


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_loop_with_a_time_limit_asks_until_its_time_is_up_and_the_next_loop_has_time_of_its_own():
    # given asks that take two seconds each
    clock = Clock()
    asking = Asking(clock=clock)

    def ask_all(items, seconds):
        asked = []
        for item in asking.each(items, seconds=seconds):
            asked.append(item)
            clock.now += 2.0
        return asked

    # when two loops of five seconds ask about five records each, and a loop without a limit after them
    first, second, unlimited = ask_all(range(5), 5.0), ask_all("abcde", 5.0), ask_all(range(5), None)

    # then each limited loop asked until its five seconds had gone (its third ask began at 4 s); the last asked all
    assert (first, second, unlimited) == ([0, 1, 2], ["a", "b", "c"], [0, 1, 2, 3, 4])


def test_a_loop_whose_time_is_gone_at_once_still_asks_its_first():
    asking = Asking(clock=Clock())
    assert list(asking.each(range(3), seconds=0.0)) == [0]


def test_once_the_service_struggled_no_loop_asks_anything_more_of_a_service_for_the_deployment_alone():
    # given a loop whose second ask the service failed with a "try again later", its items all of one owner
    asking = Asking(clock=Clock())
    asked = []
    for item in asking.each(range(5)):
        asked.append(item)
        if item == 1:
            asking.struggled()

    # then that loop stopped there, and the next asks nothing, its first included
    assert (asked, list(asking.each(range(5), seconds=5.0))) == ([0, 1], [])


def test_an_owner_the_service_struggled_for_is_skipped_and_the_others_are_asked():
    # given records of owners a, b and c, and a service that fails every ask about a's
    asking = Asking(clock=Clock())
    records = [("a", 1), ("b", 1), ("a", 2), ("c", 1), ("b", 2)]
    asked = []
    for record in asking.each(records, owner=lambda record: record[0]):
        asked.append(record)
        if record[0] == "a":
            asking.struggled("a")

    # then a's first record was asked, and every record of the others
    assert asked == [("a", 1), ("b", 1), ("c", 1), ("b", 2)]


def test_however_many_tenants_the_service_struggled_for_the_others_are_asked_until_the_deployments_struggles():
    # given records of five tenants, then of the deployment's own account (None), then of a sixth tenant, and a service
    # that fails every ask
    asking = Asking(clock=Clock())
    owners = [f"tenant {n}" for n in range(5)] + [None, "tenant 5"]
    asked = []
    for owner in asking.each(owners, owner=lambda owner: owner):
        asked.append(owner)
        asking.struggled(owner)

    # then each tenant's was asked, and nothing after the deployment's
    assert asked == owners[:6]
