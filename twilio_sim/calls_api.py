"""Twilio's Calls resource: create, fetch and list, in Twilio's wire format.

Shapes follow Twilio's OpenAPI description (shared/twilio/twilio_api_v2010.json); a test validates these
responses against it. A call is answered `queued` and lives on in the CallRunner.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from .errors import TwilioError, not_found
from .message import API_VERSION
from .state import call_runner_key, call_store_key
from .voice import ALL_EVENTS

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
ACCOUNT = f"/{API_VERSION}/Accounts/{{account_sid}}"
MACHINE_DETECTION = ("Enable", "DetectMessageEnd")

routes = web.RouteTableDef()


@routes.post(f"{ACCOUNT}/Calls.json")
async def create_call(request: web.Request) -> web.Response:
    form = await request.post()
    to, from_ = str(form.get("To", "")), str(form.get("From", ""))
    twiml, url = str(form.get("Twiml", "")) or None, str(form.get("Url", "")) or None
    if not to:
        raise TwilioError(400, 21201, "No 'To' number is specified")
    if not from_:
        raise TwilioError(400, 21213, "No 'From' number is specified")
    if twiml is None and url is None and not form.get("ApplicationSid"):
        raise TwilioError(400, 21205, "Url, Twiml or ApplicationSid is required")
    machine_detection = str(form.get("MachineDetection", ""))
    if machine_detection and machine_detection not in MACHINE_DETECTION:
        raise TwilioError(400, 21626, f"Invalid MachineDetection: {machine_detection}")
    events = frozenset(str(event) for event in form.getall("StatusCallbackEvent", [])) or frozenset({"completed"})
    if events - ALL_EVENTS:
        raise TwilioError(400, 21626, f"Invalid StatusCallbackEvent: {', '.join(sorted(events - ALL_EVENTS))}")
    try:
        time_limit = int(form["TimeLimit"]) if form.get("TimeLimit") else None
    except ValueError:
        raise TwilioError(400, 21626, "TimeLimit must be a whole number of seconds") from None
    call = request.app[call_runner_key].place(
        account_sid=request.match_info["account_sid"], to=to, from_=from_, twiml=twiml,
        status_callback=str(form.get("StatusCallback", "")) or None, events=events, time_limit=time_limit,
        machine_detection=bool(machine_detection))
    return web.json_response(call.as_resource(), status=201)


@routes.get(f"{ACCOUNT}/Calls/{{sid}}.json")
async def fetch_call(request: web.Request) -> web.Response:
    call = request.app[call_store_key].get(request.match_info["sid"])
    if call is None or call.account_sid != request.match_info["account_sid"]:
        raise not_found(request.path)
    return web.json_response(call.as_resource())


@routes.get(f"{ACCOUNT}/Calls.json")
async def list_calls(request: web.Request) -> web.Response:
    """Newest first, filtered by To, From, Status and ParentCallSid, paged by PageSize and Page."""
    query = request.query
    filters = {name: query[name] for name in ("To", "From", "Status", "ParentCallSid") if query.get(name)}
    try:
        page_size = min(max(int(query.get("PageSize", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        page = max(int(query.get("Page", 0)), 0)
    except ValueError:
        raise TwilioError(400, 20001, "Invalid paging parameters") from None
    matches = request.app[call_store_key].newest_first(
        request.match_info["account_sid"], to=filters.get("To"), from_=filters.get("From"),
        status=filters.get("Status"), parent_call_sid=filters.get("ParentCallSid"))
    start = page * page_size
    calls = matches[start:start + page_size]

    def page_uri(number: int) -> str:
        return f"{request.path}?{urlencode({**filters, 'PageSize': page_size, 'Page': number})}"

    return web.json_response({
        "calls": [call.as_resource() for call in calls],
        "end": start + max(len(calls) - 1, 0),
        "first_page_uri": page_uri(0),
        "next_page_uri": page_uri(page + 1) if start + page_size < len(matches) else None,
        "page": page,
        "page_size": page_size,
        "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        "start": start,
        "uri": page_uri(page),
    })
