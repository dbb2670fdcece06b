"""The ids on every log line of a request's work: a request id (the client's X-Request-Id when it is a plain
token, else a fresh one) and the account and message the path names; auth adds the key's account."""

import re
import uuid

from aiohttp import web

from shared import logs

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@web.middleware
async def log_context_middleware(request: web.Request, handler):
    offered = request.headers.get("X-Request-Id", "")
    # every field is bound, so nothing of the previous request on this connection's task is left on the lines
    tokens = logs.bind(request_id=offered if _REQUEST_ID.fullmatch(offered) else uuid.uuid4().hex, job_id=None,
                       actor=None, account_id=request.match_info.get("account_id"),
                       message_id=request.match_info.get("message_id"))
    try:
        return await handler(request)
    finally:
        logs.unbind(tokens)
