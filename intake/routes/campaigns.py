"""Campaigns: POST /v1/campaigns (validate, estimate, store, start the fan-out), GET, cancel, pause, resume."""

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import web
from sqlalchemy.orm import Session

from shared.campaigns.bulk_queues import bulk_actor_for
from shared.campaigns.creation import CampaignRequest, create_campaign
from shared.campaigns.search import (
    CAMPAIGN_STATUSES,
    RECIPIENT_STATUSES,
    SKIP_REASONS,
    RecipientRow,
    find_campaigns,
    find_recipients,
)
from shared.campaigns.steering import campaign_view, cancel_campaign, get_campaign, pause_campaign, resume_campaign
from shared.db import Database
from shared.errors import NotFound
from shared.ledger.accounts import get_account
from shared.messaging.rates import current_rate_card
from shared.messaging.send_cap import SendCap
from shared.models import Campaign

from ..appkeys import DATABASE, ENQUEUER, PRINCIPAL, SETTINGS
from ..auth import listed_account
from ..bodies import json_response, query_limit, read_csv, read_json
from ..cursors import decode_cursor, page_of
from ..errors import Problem
from ..fields import QueryFilters, refuse_repeated, refuse_unknown
from ..idempotency import idempotent, resumable_id
from ..openapi import CREATED_RANGE, list_operation, problem, query_filter, request_fields
from ..policy import READ_ACTIVITY, SEND, acting_user, action
from ..principal import Principal

log = logging.getLogger(__name__)

FAN_OUT_ACTOR = "fan_out_campaign"
MAX_CAMPAIGNS_PER_PAGE = 100  # each is shown with its progress: a few indexed counts per campaign

routes = web.RouteTableDef()


@routes.post("/v1/campaigns")
@action(SEND)
@idempotent
async def create(request: web.Request) -> web.Response:
    """JSON body, or the recipients as a text/csv body with the other fields in the query string."""
    if request.content_type == "text/csv":
        refuse_unknown(request.query, CAMPAIGN_FIELDS - {"csv"})
        refuse_repeated(request.query)
        payload = dict(request.query)
        payload["csv"] = await read_csv(request)
    else:
        payload = await read_json(request)
        refuse_unknown(payload, CAMPAIGN_FIELDS)
    account_id = request[PRINCIPAL].account_id or payload.get("account_id")
    if not isinstance(account_id, str):
        raise Problem(422, "Validation failed", "The operator key must name the account_id to send for.",
                      errors={"account_id": "is required with the operator key"})
    user_id = acting_user(request[PRINCIPAL], payload.get("user_id"))
    if user_id is not None and not isinstance(user_id, str):
        raise Problem(422, "Validation failed", "user_id must be a user's id.", errors={"user_id": "must be a string"})
    campaign_request = CampaignRequest(
        name=payload.get("name"), from_=payload.get("from"), body=payload.get("body"),
        recipients=payload.get("recipients"), csv=payload.get("csv"), send_at=payload.get("send_at"),
        quiet_hours=payload.get("quiet_hours"), steps=payload.get("steps"), user_id=user_id)
    answer = await asyncio.to_thread(_create, request.app[DATABASE], SendCap.from_settings(request.app[SETTINGS]),
                                     account_id, campaign_request, await resumable_id(request, "cmp"))
    if answer["status"] == "running":
        try:
            await request.app[ENQUEUER].send(FAN_OUT_ACTOR, answer["id"], 0)
        except Exception:
            # The campaign is committed: the scheduler's campaign_steps job starts due steps.
            log.exception("could not enqueue %s for %s; the scheduler will", FAN_OUT_ACTOR, answer["id"])
    return json_response(answer, status=202)


def _create(database: Database, cap: SendCap, account_id: str, campaign_request: CampaignRequest,
            campaign_id: str | None) -> dict:
    campaign, estimate = create_campaign(database, account_id, campaign_request, rate_card=current_rate_card(database.engine),
                                         now=datetime.now(UTC), cap=cap, campaign_id=campaign_id)
    return {"id": campaign.id, "status": campaign.status, "estimate": estimate.as_dict()}


@routes.get("/v1/campaigns/{campaign_id}")
@action(READ_ACTIVITY)
async def read(request: web.Request) -> web.Response:
    campaign_id = request.match_info["campaign_id"]
    principal = request[PRINCIPAL]
    database = request.app[DATABASE]

    def view() -> dict:
        with database.read_only() as session:
            return campaign_view(session, own_campaign(session, campaign_id, principal))

    return json_response(await asyncio.to_thread(view))


@routes.get("/v1/campaigns")
@action(READ_ACTIVITY)
async def list_campaigns(request: web.Request) -> web.Response:
    account_id = listed_account(request)
    own_only = request[PRINCIPAL].own_only
    limit = query_limit(request, maximum=MAX_CAMPAIGNS_PER_PAGE)
    before_id = decode_cursor(request, text_ids=True)
    filters = QueryFilters(request.query, page_names=("limit", "cursor", "account_id"))
    wanted = {"status": filters.choice("status", CAMPAIGN_STATUSES), "created_after": filters.instant("created_after"),
              "created_before": filters.instant("created_before")}
    filters.done()
    database = request.app[DATABASE]

    def read() -> dict:
        with database.read_only() as session:
            get_account(session, account_id)
            rows = find_campaigns(session, account_id, limit=limit + 1, before_id=before_id, user_id=own_only,
                                  **wanted)
            return page_of(request, rows, limit, lambda campaign: campaign_view(session, campaign))

    return json_response(await asyncio.to_thread(read))


@routes.get("/v1/campaigns/{campaign_id}/recipients")
@action(READ_ACTIVITY)
async def list_recipients(request: web.Request) -> web.Response:
    campaign_id = request.match_info["campaign_id"]
    principal = request[PRINCIPAL]
    limit = query_limit(request)
    before_id = decode_cursor(request)
    filters = QueryFilters(request.query)
    wanted = {"status": filters.choice("status", RECIPIENT_STATUSES),
              "skip_reason": filters.choice("skip_reason", SKIP_REASONS)}
    filters.done()
    database = request.app[DATABASE]

    def read() -> dict:
        with database.read_only() as session:
            campaign = own_campaign(session, campaign_id, principal)
            rows = find_recipients(session, campaign, limit=limit + 1, before_id=before_id, **wanted)
            return page_of(request, rows, limit, _recipient_json)

    return json_response(await asyncio.to_thread(read))


def _recipient_json(row: RecipientRow) -> dict:
    return {"id": str(row.id), "position": row.position, "to": row.to, "fields": row.fields, "status": row.status,
            "skip_reason": row.skip_reason, "message_id": row.message_id}


@routes.post("/v1/campaigns/{campaign_id}/{action:cancel|pause|resume}")
@action(SEND)
async def steer(request: web.Request) -> web.Response:
    view = await steer_campaign(request.app, request[PRINCIPAL], request.match_info["campaign_id"],
                                request.match_info["action"])
    return json_response(view)


async def steer_campaign(app: web.Application, principal: Principal, campaign_id: str, action: str) -> dict:
    """Cancel, pause or resume a campaign the principal may see (the API's and the console's): its view after."""
    account_id = principal.account_id
    database = app[DATABASE]

    def apply() -> tuple[dict, list[str], str]:
        now = datetime.now(UTC)
        to_enqueue: list[str] = []
        with database.unit_of_work() as session:
            own_campaign(session, campaign_id, principal)  # a user steers its own campaigns only
            if action == "cancel":
                campaign = cancel_campaign(session, campaign_id, account_id=account_id, now=now)
            elif action == "pause":
                campaign = pause_campaign(session, campaign_id, account_id=account_id, now=now)
            else:
                campaign, to_enqueue = resume_campaign(session, campaign_id, account_id=account_id, now=now)
            return campaign_view(session, campaign), to_enqueue, campaign.account_id

    view, to_enqueue, campaign_account = await asyncio.to_thread(apply)
    enqueuer = app[ENQUEUER]
    try:
        if to_enqueue:
            await asyncio.to_thread(enqueuer.send_many_blocking, bulk_actor_for(campaign_account),
                                    [(message_id,) for message_id in to_enqueue])
        if action == "resume" and view["status"] == "running":
            await enqueuer.send(FAN_OUT_ACTOR, campaign_id, 0)  # a step claimed before the pause goes on
    except Exception:
        # Committed: the sweeper sends accepted messages left waiting, the campaign_steps job stalled steps.
        log.exception("could not enqueue the jobs of campaign %s after %s; the sweepers will", campaign_id, action)
    return view


def own_campaign(session: Session, campaign_id: str, principal: Principal) -> Campaign:
    """The campaign, if the caller may see it: its account's, and to a role-`user` key only its own."""
    campaign = get_campaign(session, campaign_id, account_id=principal.account_id)
    if principal.own_only is not None and campaign.user_id != principal.own_only:
        raise NotFound(f"No campaign {campaign_id}.")
    return campaign


_ID = [{"name": "campaign_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_CREDITS = {"type": "string", "examples": ["1500.5"]}
_VIEW = {"type": "object", "properties": {
    "id": {"type": "string"}, "name": {"type": "string"},
    "user_id": {"type": ["string", "null"], "description": "The user it was sent as"}, "from": {"type": "string"},
    "status": {"type": "string", "enum": ["creating", "scheduled", "running", "paused", "canceled", "completed"],
               "description": "creating: its recipients are still being written (a creation that died half-way "
                              "stays so until retried with its Idempotency-Key); completed: every step fanned "
                              "out and no message waiting to be sent"},
    "counts": {"type": "object", "description": (
        "Messages of every step by where they are; total is recipients. scheduled: waiting for a time (outside "
        "the recipients' quiet hours, until next_send_at, or paused); queued: on their way to Twilio"),
               "properties": {name: {"type": "integer"} for name in (
                   "total", "queued", "scheduled", "sent", "delivered", "failed", "canceled", "parked",
                   "skipped")}},
    "next_send_at": {"type": ["string", "null"], "format": "date-time", "description": (
        "When the next waiting message is due: the soonest time of its scheduled messages (e.g. 08:00 local when "
        "quiet hours hold them), else the start of its next step; null when nothing waits for a time")},
    "skip_reasons": {"type": "object", "additionalProperties": {"type": "integer"},
                     "description": "invalid_number, duplicate, opted_out, do_not_contact, unsupported_country"},
    "credits_estimated": {**_CREDITS, "description": "Every step, every sendable recipient, priced at creation"},
    "credits_held": {**_CREDITS, "description": "Held now for its messages not yet settled"},
    "credits_charged": {**_CREDITS, "description": "Spent: charged for its settled messages"},
    "quiet_hours": {"type": "object", "properties": {"start": {"type": "string"}, "end": {"type": "string"}}},
    "steps": {"type": "array", "items": {"type": "object", "properties": {
        "step": {"type": "integer"}, "delay_days": {"type": "integer"},
        "status": {"type": "string", "enum": ["pending", "fanning_out", "done", "canceled"]},
        "starts_at": {"type": "string", "format": "date-time"}}}},
    "send_at": {"type": "string", "format": "date-time"}, "created_at": {"type": "string", "format": "date-time"},
    "updated_at": {"type": "string", "format": "date-time"},
}}

# What a request looks like (clients copy it, the contract tests send it).
_CAMPAIGN_EXAMPLE = {"name": "Open house", "from": "+14155550199", "body": "Hi {{ name }}, open house Sunday at 2pm.",
                     "recipients": [{"to": "+14155550100", "fields": {"name": "Ann"}}],
                     "quiet_hours": {"start": "00:00", "end": "00:00"}}

_RECIPIENT = {"type": "object", "properties": {
    "id": {"type": "string"}, "position": {"type": "integer", "description": "0-based, in the order given"},
    "to": {"type": "string"}, "fields": {"type": "object", "description": "Its template fields"},
    "status": {"type": "string", "enum": list(RECIPIENT_STATUSES), "description": (
        "Where its latest message is (one per step); skipped: it has a skip_reason; pending: no step fanned out to "
        "it yet")},
    "skip_reason": {"type": ["string", "null"], "enum": [*SKIP_REASONS, None]},
    "message_id": {"type": ["string", "null"], "description": "Its latest message (GET /v1/messages/{message_id})"},
}}

OPENAPI_PATHS = {
    "/v1/campaigns": {"get": list_operation(
        "listCampaigns", "List the account's campaigns, each with its progress", _VIEW,
        maximum=MAX_CAMPAIGNS_PER_PAGE,
        description="Each as GET /v1/campaigns/{campaign_id} shows it.",
        filters=[
            query_filter("account_id", "Required with the operator key; an account key may only name its own."),
            query_filter("status", "`completed` lists the campaigns the sweeper found finished (every step fanned "
                                   "out and nothing waiting; found within a minute), `running` the others running.",
                         {"type": "string", "enum": list(CAMPAIGN_STATUSES)}),
            *CREATED_RANGE]),
                     "post": {
        "operationId": "createCampaign",
        "summary": "Send a Liquid-templated body (and drip steps) to many recipients",
        "description": (
            "Recipients come inline (`recipients: [{to, fields}]`), as CSV text in `csv` (a header row with a `to` "
            "column; every other column is a field), or as a `text/csv` body with the other fields in the query "
            "string. `body` and each step's body are Liquid templates rendered per recipient with its fields and "
            "`to`; an unknown field or a syntax error is refused (422) naming the template and the line. "
            "Recipients that are duplicates, opted out, on the do-not-contact list, or whose numbers are not E.164 "
            "are skipped with a reason; numbers are fully validated when their chunk fans out. Messages reach "
            "recipients only inside `quiet_hours` of their local time (zone from the number; default: the "
            "account's window, 08:00-21:00 unless it set another; equal start and end turn them off); outside it "
            "they wait as `scheduled`. Credits are held per chunk of 1,000 recipients; "
            "on a prepaid account a chunk that does not fit waits as `parked` until credits are added."),
        "parameters": [{"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "maxLength": 200}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {
                "type": "object", "examples": [_CAMPAIGN_EXAMPLE], "required": ["name", "from", "body"],
                "additionalProperties": False,  # an unknown field is a 422 naming it
                "properties": {
                    "name": {"type": "string", "maxLength": 200},
                    "from": {"type": "string", "description": "One of the account's sender numbers"},
                    "body": {"type": "string", "description": "Liquid template, e.g. 'Hi {{ first_name }}'"},
                    "recipients": {"type": "array", "maxItems": 250000, "items": {
                        "type": "object", "required": ["to"],
                        "properties": {"to": {"type": "string"}, "fields": {"type": "object"}}}},
                    "csv": {"type": "string", "description": "Instead of recipients: CSV text with a `to` column"},
                    "send_at": {"type": "string", "format": "date-time", "description": (
                        "Start later: at most a year ahead; a time within the last day starts now, one further "
                        "back is a 422")},
                    "quiet_hours": {"type": "object", "properties": {
                        "start": {"type": "string", "examples": ["08:00"]},
                        "end": {"type": "string", "examples": ["21:00"]}}},
                    "steps": {"type": "array", "maxItems": 10, "items": {
                        "type": "object", "required": ["delay_days", "body"],
                        "properties": {"delay_days": {"type": "integer", "minimum": 1,
                                                      "description": "Days after the campaign starts"},
                                       "body": {"type": "string"}}}},
                    "account_id": {"type": "string", "description": "Only with the operator key"},
                    "user_id": {"type": "string", "description": (
                        "The user sending: a role-`user` user's campaign is held and charged from its own "
                        "credits. Left out with a user key: that key's user; a role-`user` key may name no "
                        "other (403)")},
                }}},
            "text/csv": {"schema": {"type": "string", "examples": ["to,name\n+14155550100,Ann\n"]}}}},
        "responses": {
            "202": {"description": "Accepted", "links": {
                operation_id: {"operationId": operation_id, "parameters": {"campaign_id": "$response.body#/id"}}
                for operation_id in ("getCampaign", "pauseCampaign", "resumeCampaign", "cancelCampaign")},
                "content": {"application/json": {"schema": {
                "type": "object", "properties": {
                    "id": {"type": "string"}, "status": {"type": "string", "enum": ["running", "scheduled"]},
                    "estimate": {"type": "object", "properties": {
                        "recipients": {"type": "integer"}, "sendable": {"type": "integer"},
                        "skipped": {"type": "object", "additionalProperties": {"type": "integer"}},
                        "messages": {"type": "integer"}, "segments": {"type": "integer"},
                        "ucs2_messages": {"type": "integer"}, "credits_total": _CREDITS,
                        "warnings": {"type": "array", "items": {"type": "string"}, "description": (
                            "The pre-flight's, for an overdraft or postpaid account the campaign does not fit "
                            "(after the sends already scheduled before its last step): the recipient at which the "
                            "balance would go below zero, and the one the overdraft limit would stop it at")}}}}}}}},
            "402": problem(402, "Pre-flight: a prepaid account (or a role-`user` user's own credits) cannot pay for "
                                "every step after the sends already scheduled before its last step; `stops_at` "
                                "names the send it would stop at: `{step, position (0-based in the list), to}`"),
            "403": problem(403, "A role-`user` key named another user"),
            "404": problem(404, "No such account (operator key) or user"),
            "409": problem(409, "The Idempotency-Key was used with another request, or is still running"),
            "422": problem(422, "Invalid field, CSV or template; `errors` names each"),
            "423": problem(423, "The account is locked, or the sending user is (its own credits went below zero)"),
            "429": problem(429, "The account's request rate limit, or a new account's daily send cap, which the "
                                "campaign's sendable recipients would pass (`limit`, `resets_at`); both with "
                                "Retry-After"),
        },
    }},
    "/v1/campaigns/{campaign_id}/recipients": {"parameters": _ID, "get": list_operation(
        "listCampaignRecipients", "A campaign's recipients, each with where its messages are", _RECIPIENT,
        not_found="no such campaign (or another account's)",
        filters=[query_filter("status", "Where the recipient is. The recipients are read until the page is full: "
                                       "on a big campaign, a status few of them have takes longer.",
                              {"type": "string", "enum": list(RECIPIENT_STATUSES)}),
                 query_filter("skip_reason", "Why it is skipped.", {"type": "string", "enum": list(SKIP_REASONS)})])},
    "/v1/campaigns/{campaign_id}": {"get": {
        "operationId": "getCampaign", "summary": "A campaign and its progress", "parameters": _ID,
        "responses": {"200": {"description": "The campaign", "content": {"application/json": {"schema": _VIEW}}},
                      "404": problem(404, "No such campaign (or, to a role-`user` key, another user's)")}}},
    **{f"/v1/campaigns/{{campaign_id}}/{action}": {"post": {
        "operationId": f"{action}Campaign", "summary": summary, "parameters": _ID,
        "responses": {"200": {"description": "The campaign", "content": {"application/json": {"schema": _VIEW}}},
                      "404": problem(404, "No such campaign (or, to a role-`user` key, another user's)"),
                      "409": problem(409, "The campaign is canceled, completed (cancel) or still being "
                                          "created")}}}
       for action, summary in (
           ("cancel", "Cancel: waiting messages are canceled and their credits released"),
           ("pause", "Pause: messages not yet sent wait (as scheduled, without a time) until resumed"),
           ("resume", "Resume a paused campaign"))},
}
CAMPAIGN_FIELDS = request_fields(OPENAPI_PATHS, "/v1/campaigns")  # what a POST may name: its documented schema's
