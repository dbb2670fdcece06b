"""A dramatiq middleware that binds a job's ids for every line its actor logs (shared.logs): the job id, the
actor, and the message or account the job is about when the actor takes one as `message_id` or `account_id`."""

import inspect
import threading

from dramatiq import Middleware
from dramatiq.errors import ActorNotFound

from shared import logs

ID_PARAMETERS = ("message_id", "account_id")


class JobLogContext(Middleware):
    def __init__(self):
        self._signatures: dict[str, inspect.Signature] = {}
        self._bound = threading.local()  # a worker thread runs one job at a time

    def before_process_message(self, broker, message):
        ids = dict.fromkeys(logs.FIELDS)
        ids.update(job_id=message.message_id, actor=message.actor_name)
        ids.update(self._ids_in_arguments(broker, message))
        self._bound.tokens = logs.bind(**ids)

    def after_process_message(self, broker, message, *, result=None, exception=None):
        tokens = getattr(self._bound, "tokens", None)
        if tokens is not None:
            logs.unbind(tokens)
            self._bound.tokens = None

    after_skip_message = after_process_message

    def _ids_in_arguments(self, broker, message) -> dict[str, str]:
        try:
            signature = self._signatures.get(message.actor_name)
            if signature is None:
                signature = self._signatures[message.actor_name] = inspect.signature(
                    broker.get_actor(message.actor_name).fn)
            arguments = signature.bind_partial(*message.args, **message.kwargs).arguments
        except (ActorNotFound, TypeError):
            return {}  # the worker refuses the job itself, and says why
        return {name: str(arguments[name]) for name in ID_PARAMETERS if arguments.get(name) is not None}
