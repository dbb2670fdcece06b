"""The served OpenAPI document, assembled from the paths each route module declares.

Every error is the one `Problem` schema, and each status has one shared answer under
`#/components/responses`; an operation lists the ones it can give by reference (`problem(404, "when")`).
The answers the frame gives on its own are added here to every operation they apply to, so no module
can forget them: 400 (text with NUL, an unreadable body), 401 and 429 (no or a wrong key, and the
account's rate limit, where a key is needed), 413 (a body over its route's limit, where there is a body) and
503 with Retry-After (the database is away: nothing was changed).
"""

from collections.abc import Callable
from types import ModuleType

from .body_limits import MAX_BODY_BYTES, MAX_BULK_BODY_BYTES
from .policy import ROLES_TABLE, Action
from .principal import OPERATOR_ROLE, ROLES

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"},
                   "description": "422: what is wrong with each field, by its name (`plan.cycle`, `steps[0].day`)"},
        "available": {"type": "string", "description": "402: the credits the account can spend"},
        "required": {"type": "string", "description": "402: the credits the request needs"},
        "stops_at": {"type": "object", "description": "402 from a campaign's pre-flight: the send it would stop at",
                     "properties": {"step": {"type": "integer"}, "position": {"type": "integer"},
                                    "to": {"type": "string"}}},
        "max_bytes": {"type": "integer", "description": "413: the largest body the route takes"},
        "limit": {"type": "integer", "description": "429 from a daily send cap: messages a day"},
        "resets_at": {"type": "string", "format": "date-time", "description": "429 from a daily send cap"},
    },
}

# status -> (component name, what it means wherever it is given)
ERROR_RESPONSES = {
    400: ("BadRequest", "The request cannot be read: a body that is not a JSON object (or a form or CSV that "
                        "cannot be parsed, a multipart body without a boundary), or text holding a NUL "
                        "character or an unpaired surrogate in the path, the query string or the body"),
    401: ("Unauthorized", "No `Authorization: Bearer` key, or one that is not valid"),
    402: ("PaymentRequired", "The account cannot pay: `available` and `required` credits"),
    403: ("Forbidden", "The key's role may not do this (see each operation's Who, and the roles above), or a "
                       "webhook's signature is wrong"),
    404: ("NotFound", "No such resource, or one that belongs to another account"),
    409: ("Conflict", "The resource's state refuses the request, or the Idempotency-Key was used with another "
                      "request (or its first request is still running)"),
    413: ("ContentTooLarge", f"The body is over the route's limit: {MAX_BODY_BYTES // 2**20} MiB, or "
                            f"{MAX_BULK_BODY_BYTES // 2**20} MiB for the bulk routes (do-not-contact imports, "
                            "campaigns and voice broadcasts); answered before the body is read"),
    415: ("UnsupportedMediaType", "The body's Content-Type is not one the operation takes"),
    422: ("ValidationFailed", "A field is missing or invalid; `errors` names each one"),
    423: ("Locked", "The account is locked (its balance went below zero) or suspended"),
    429: ("TooManyRequests", "The account's request rate limit (or a new account's daily send cap) is reached; "
                             "Retry-After says when to try again"),
    503: ("ServiceUnavailable", "A service this request needs is not answering; try again later"),
}


def problem(status: int, description: str | None = None) -> dict:
    """The shared answer for `status`, with this operation's own words on when it comes."""
    reference = {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}
    return {**reference, "description": description} if description else reference


def build_document(modules: list[ModuleType], action_for: Callable[[str, str], Action | None]) -> dict:
    """`action_for(path, method)`: the action the route declares (intake.policy), shown as who may call it."""
    paths: dict = {}
    for module in modules:
        for path, operations in module.OPENAPI_PATHS.items():
            paths.setdefault(path, {}).update({
                method: operation if method == "parameters" else _with_frame_answers(
                    _with_roles(operation, action_for(path, method)))
                for method, operation in operations.items()})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditq",
            "version": "1",
            "description": ("Credit-metered messaging. Credits are decimal strings; errors are "
                            "application/problem+json. Request bodies are limited to "
                            f"{MAX_BODY_BYTES // 2**20} MiB, {MAX_BULK_BODY_BYTES // 2**20} MiB for do-not-contact "
                            "imports and campaigns (413 above it).\n\n" + ROLES_TABLE),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "responses": {name: {"description": description, "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
                for name, description in ERROR_RESPONSES.values()},
        },
        "paths": dict(sorted(paths.items())),
    }


def _with_roles(operation: dict, action: Action | None) -> dict:
    """Who may call it (x-creditq-action, x-creditq-roles and a line of the description), and the refusal the
    others get."""
    if action is None or action.public:
        return operation
    roles = [role for role in ROLES if role == OPERATOR_ROLE or role in action.roles]
    who = f"Who: {', '.join(roles)} ({action.name}: {action.what})."
    described = {**operation, "x-creditq-action": action.name, "x-creditq-roles": roles,
                 "description": f"{operation['description']}\n\n{who}" if operation.get("description") else who}
    if len(roles) < len(ROLES):
        refusal = problem(action.denied, "the calling key's role may not do this (see Who)")
        described["responses"] = {str(action.denied): refusal, **operation["responses"]}
    return described


def _with_frame_answers(operation: dict) -> dict:
    responses = {"400": problem(400), **operation["responses"]}
    responses.setdefault("503", problem(503, "the database is not answering (restarting, failing over): nothing "
                                             "was changed; Retry-After says when to try again"))
    if operation.get("security") != []:  # every key has a request rate limit
        responses.setdefault("401", problem(401))
        responses.setdefault("429", problem(429))
    if "requestBody" in operation:
        responses.setdefault("413", problem(413))
    return {**operation, "responses": dict(sorted(responses.items()))}


def list_operation(operation_id: str, summary: str, item: dict, *, filters: list[dict], description: str = "",
                   not_found: str = "no such account (or another account's)", maximum: int = 500,
                   responses: dict | None = None) -> dict:
    """A list's operation: `limit`, `cursor` and its filters, answering `{data, next_cursor}` newest first.

    Every list pages the one way intake.cursors does; a filter that is not valid, one the list does not take,
    or one given twice, is a 422 naming it."""
    return {
        "operationId": operation_id, "summary": summary,
        "description": (description + " " if description else "") + (
            "Newest first, paged: `next_cursor` is null on the last page, else passed as `cursor` for the next, by "
            "the same account (or user) with the same filters (`limit` may change); rows inserted while paging "
            "never move a row to another page. Filters combine (AND)."),
        "parameters": [
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": maximum},
             "description": "Rows per page (default 50)."},
            {"name": "cursor", "in": "query", "schema": {"type": "string"},
             "description": "next_cursor of the previous page."},
            *filters],
        "responses": {
            "200": {"description": "a page", "content": {"application/json": {"schema": {
                "type": "object", "required": ["data", "next_cursor"], "properties": {
                    "data": {"type": "array", "items": item}, "next_cursor": {"type": ["string", "null"]}}}}}},
            "404": problem(404, not_found),
            "422": problem(422, "a bad limit, cursor or filter, one the list does not take, or one given twice; "
                                "`errors` names it"),
            **(responses or {}),
        },
    }


def request_fields(paths: dict, path: str) -> frozenset[str]:
    """The fields the JSON body of `path`'s POST may name: those its documented schema lists."""
    return frozenset(paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"])


def query_filter(name: str, description: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "query", "schema": schema or {"type": "string"}, "description": description}


CREATED_RANGE = [
    query_filter("created_after", "Created at or after this time (ISO-8601 with an offset).",
                 {"type": "string", "format": "date-time"}),
    query_filter("created_before", "Created before this time (ISO-8601 with an offset).",
                 {"type": "string", "format": "date-time"}),
]
