"""Liquid (python-liquid) for the texts tenants write: campaign bodies, dunning emails and texts.

A tenant's template runs in our processes, so each render is bounded: loop iterations, the size of what it
assigns or captures (a string doubled by `append` in a loop reached gigabytes within a capped loop), output, and
no includes (a text is one template). A template past a limit raises one of Liquid's ResourceLimitErrors,
which the callers refuse with the template's field named.
"""

from liquid import Environment


class BoundedEnvironment(Environment):
    loop_iteration_limit = 1_000
    local_namespace_limit = 50_000  # bytes of the values a template holds (sys.getsizeof), names aside
    output_stream_limit = 20_000  # characters: an email body at most; a text may not exceed 1,600 anyway

    def __init__(self, **options) -> None:
        super().__init__(**options)
        for tag in ("include", "render"):
            self.tags.pop(tag, None)
