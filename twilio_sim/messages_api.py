"""Twilio's Messages resource: create, fetch and list, in Twilio's wire format.

Shapes follow Twilio's OpenAPI description (shared/twilio/twilio_api_v2010.json); a test
validates these responses against it.
"""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from aiohttp import web

from .delivery import plan_delivery
from .errors import TwilioError, not_found
from .magic_numbers import check_magic_numbers
from .message import API_VERSION, Message, new_sid
from .segments import count_segments
from .state import config_key, reporter_key, rng_key, store_key

MAX_BODY_LENGTH = 1600
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
ACCOUNT = f"/{API_VERSION}/Accounts/{{account_sid}}"

routes = web.RouteTableDef()


@routes.post(f"{ACCOUNT}/Messages.json")
async def create_message(request: web.Request) -> web.Response:
    form = await request.post()
    config = request.app[config_key]
    to = str(form.get("To", ""))
    from_ = str(form.get("From", "")) or None
    service_sid = str(form.get("MessagingServiceSid", "")) or None
    body = str(form.get("Body", ""))
    media_urls = form.getall("MediaUrl", [])
    if not to:
        raise TwilioError(400, 21604, "A 'To' phone number is required.")
    if from_ is None and service_sid is None:
        raise TwilioError(400, 21603, "A 'From' phone number is required.")
    if not body and not media_urls:
        raise TwilioError(400, 21602, "Message body is required.")
    if len(body) > MAX_BODY_LENGTH:
        raise TwilioError(
            400, 21617, "The concatenated message body exceeds the 1600 character limit."
        )
    check_magic_numbers(to, from_)

    # An MMS is one message whatever its length; an SMS is billed per segment.
    num_segments = config.num_segments_override or (1 if media_urls else count_segments(body))
    message = Message(
        sid=new_sid("MM" if media_urls else "SM"),
        account_sid=request.match_info["account_sid"],
        to=to,
        from_=from_,
        body=body,
        messaging_service_sid=service_sid,
        num_media=len(media_urls),
        num_segments=num_segments,
        cost=num_segments * config.price_per_segment,
        plan=plan_delivery(config, request.app[rng_key], from_),
        status_callback=str(form.get("StatusCallback", "")) or None,
        # Through a Messaging Service without a From, Twilio first answers "accepted".
        status="queued" if from_ else "accepted",
    )
    request.app[store_key].add(message)
    request.app[reporter_key].track(message)
    return web.json_response(message.as_resource(), status=201)


@routes.get(f"{ACCOUNT}/Messages/{{sid}}.json")
async def fetch_message(request: web.Request) -> web.Response:
    message = request.app[store_key].get(request.match_info["sid"])
    if message is None or message.account_sid != request.match_info["account_sid"]:
        raise not_found(request.path)
    return web.json_response(message.as_resource())


@routes.get(f"{ACCOUNT}/Messages.json")
async def list_messages(request: web.Request) -> web.Response:
    """Newest first, paged as Twilio pages: PageSize, Page, and a PageToken cursor.

    The token names the last message of the previous page, so messages created while a
    client pages through do not shift later pages.
    """
    query = request.query
    filters = {name: query[name] for name in ("To", "From", "DateSent>") if query.get(name)}
    try:
        page_size = min(max(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        page = max(int(query.get("Page", 0)), 0)
    except ValueError:
        raise TwilioError(400, 20001, "Invalid paging parameters") from None
    matches = request.app[store_key].newest_first(request.match_info["account_sid"], to=filters.get("To"),
                                                  from_=filters.get("From"))
    if "DateSent>" in filters:
        sent_since = _gmt_date(filters["DateSent>"])
        matches = [m for m in matches if m.date_sent is not None and m.date_sent.date() >= sent_since]
    start = _page_start(matches, query.get("PageToken"), page * page_size)
    messages = matches[start : start + page_size]

    def page_uri(number: int, token: str | None = None) -> str:
        params = {**filters, "PageSize": page_size, "Page": number}
        if token:
            params["PageToken"] = token
        return f"{request.path}?{urlencode(params)}"

    has_more = start + page_size < len(matches)
    return web.json_response(
        {
            "end": start + max(len(messages) - 1, 0),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1, "PA" + messages[-1].sid) if has_more else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": page_uri(page, query.get("PageToken")),
            "messages": [message.as_resource() for message in messages],
        }
    )


def _gmt_date(raw: str) -> date:
    """DateSent> counts whole GMT days, inclusive: `2026-03-01` or a time on that day (the twilio package
    sends `2026-03-01T12:00:00Z`) both mean messages sent on or after March 1."""
    try:
        return date.fromisoformat(raw[:10])
    except ValueError:
        raise TwilioError(400, 20001, f"Invalid DateSent> filter: {raw}") from None


def _page_start(matches: list[Message], page_token: str | None, offset: int) -> int:
    """Index just after the token's message; the plain offset when there is no usable token."""
    if page_token and page_token.startswith("PA"):
        last_sid = page_token[2:]
        for index, message in enumerate(matches):
            if message.sid == last_sid:
                return index + 1
    return offset
