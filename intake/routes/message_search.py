"""GET /v1/messages: an account's messages, sent and received (replies), filtered and paged (shared.messaging.search).

Apart from intake/routes/messages.py, whose POST is the hot path: this one only reads.
"""

import asyncio
import dataclasses

from aiohttp import web

from shared.db import Database
from shared.ledger.accounts import get_account
from shared.messaging.messages import message_view
from shared.messaging.search import DIRECTIONS, STATUSES, MessageFilter, find_messages, resends_of

from ..appkeys import DATABASE, PRINCIPAL
from ..auth import listed_account
from ..bodies import json_response, query_limit
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import QueryFilters
from ..openapi import CREATED_RANGE, list_operation, query_filter
from ..policy import READ_ACTIVITY, action
from .messages import MESSAGE_SCHEMA

routes = web.RouteTableDef()


@routes.get("/v1/messages")
@action(READ_ACTIVITY)
async def list_messages(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    own_only = request[PRINCIPAL].own_only
    limit = query_limit(request)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query, page_names=("limit", "cursor", "account_id"))
    wanted = MessageFilter(
        direction=filters.choice("direction", DIRECTIONS), status=filters.choice("status", STATUSES),
        campaign_id=filters.text("campaign_id", max_length=40), user_id=filters.text("user_id", max_length=40),
        to=filters.phone("to"), from_=filters.phone("from"),
        created_after=filters.instant("created_after"), created_before=filters.instant("created_before"))
    filters.done()
    if own_only is not None:  # a role-`user` key reads its own messages only
        if wanted.user_id not in (None, own_only):
            raise Problem(404, "Not found", f"No user {wanted.user_id}.")
        wanted = dataclasses.replace(wanted, user_id=own_only)

    def read(database: Database) -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = find_messages(session, account_id, wanted, limit=limit + 1, before_id=before_id)
            resent = resends_of(session, [row.id for row in rows[:limit]])
            return page_of(request, rows, limit,
                           lambda message: message_view(message, reprocessed_as=resent.get(message.id)))

    return json_response(await asyncio.to_thread(read, request.app[DATABASE]))


OPENAPI_PATHS = {
    "/v1/messages": {"get": list_operation(
        "listMessages", "Search the account's messages, sent and received", MESSAGE_SCHEMA,
        description=("Outbound messages and inbound ones (texts people sent to the account's numbers: replies, "
                     "STOP, HELP), with the same fields as GET /v1/messages/{message_id}, by `created_at` then id."),
        filters=[
            query_filter("account_id", "Required with the operator key; an account key may only name its own."),
            query_filter("direction", "outbound, or inbound (replies).", {"type": "string", "enum": list(DIRECTIONS)}),
            query_filter("status", "Where the message is; received is every inbound one.",
                         {"type": "string", "enum": list(STATUSES)}),
            query_filter("campaign_id", "Messages of this campaign (every step)."),
            query_filter("user_id", "Messages sent by this user."),
            query_filter("to", "The recipient (inbound: the account's number), E.164 with `+` as %2B or left out; "
                               "or a short code."),
            query_filter("from", "The sender (inbound: who texted), E.164 or a short code, as `to`."),
            *CREATED_RANGE])},
}
