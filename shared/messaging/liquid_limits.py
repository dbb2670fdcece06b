"""Liquid (python-liquid) for the texts tenants write: campaign bodies, dunning emails and texts.

A tenant's template runs in our processes, so each render is bounded: loop iterations, the size of what it
assigns or captures (a string doubled by `append` in a loop reached gigabytes within a capped loop), what a filter
is handed and what `join` and `replace` would make (`(1..40000000) | join` built gigabytes from 38 characters: a
range costs nothing until a filter walks it), output, and no includes (a text is one template). A template past
a limit raises one of Liquid's ResourceLimitErrors, which the callers refuse with the template's field named.
"""

import functools
from collections.abc import Callable

from liquid import Environment
from liquid.exceptions import ResourceLimitError

MAX_FILTER_ITEMS = 1_000  # items of a range or list one filter may be handed
MAX_FILTER_RESULT = 100_000  # characters `join` or `replace` may make: the filters whose result outgrows their input


class BoundedEnvironment(Environment):
    loop_iteration_limit = 1_000  # iterations of a loop, nested loops counted together
    local_namespace_limit = 50_000  # bytes of the values a template holds (sys.getsizeof), names aside
    output_stream_limit = 20_000  # bytes: an email body at most; a text may not exceed 1,600 characters anyway

    def __init__(self, **options) -> None:
        super().__init__(**options)
        for tag in ("include", "render"):
            self.tags.pop(tag, None)
        self.filters = {name: _bounded(function, _RESULTS.get(name)) for name, function in self.filters.items()}


_SEQUENCES = (range, list, tuple)


def _joined(items=(), separator=" ", *_, **__) -> int:
    items = list(items) if issubclass(type(items), _SEQUENCES) else [items]
    return sum(len(str(item)) for item in items) + len(str(separator)) * max(len(items) - 1, 0)


def _replaced(value="", old="", new="", *_, **__) -> int:
    value, old, new = str(value), str(old), str(new)
    return len(value) + (value.count(old) if old else len(value) + 1) * max(len(new) - len(old), 0)


_RESULTS: dict[str, Callable[..., int]] = {"join": _joined, "replace": _replaced}  # a filter -> its result's length


def _bounded(function: Callable, result_length: Callable[..., int] | None) -> Callable:
    """The filter, refusing a range or list of more than MAX_FILTER_ITEMS among what it is given, and a result
    `result_length` says would pass MAX_FILTER_RESULT."""
    @functools.wraps(function)
    def bounded(*args, **kwargs):
        for value in (*args, *kwargs.values()):  # by type(): a strict Undefined refuses even `__class__`
            if issubclass(type(value), _SEQUENCES) and len(value) > MAX_FILTER_ITEMS:
                raise ResourceLimitError(f"filter input limit reached ({MAX_FILTER_ITEMS:,} items)", token=None)
        if result_length is not None and result_length(*args, **kwargs) > MAX_FILTER_RESULT:
            raise ResourceLimitError(f"filter result limit reached ({MAX_FILTER_RESULT:,} characters)", token=None)
        return function(*args, **kwargs)
    return bounded
