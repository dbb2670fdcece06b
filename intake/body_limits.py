"""How large a request body may be: small for JSON (and Twilio's forms), large for the bulk routes.

A body over its route's limit answers 413 problem+json without being read: at once when its
Content-Length says so, else as soon as the bytes read pass the limit (chunked uploads). The limits
are documented in the README and in each operation's 413 answer.
"""

from aiohttp import web

from .errors import Problem

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: any JSON body or form of this API is far smaller
MAX_BULK_BODY_BYTES = 20 * 1024 * 1024  # 20 MiB: a do-not-contact import, a campaign of 250,000 recipients
BULK_ROUTES = frozenset({("POST", "/v1/opt-outs/import"), ("POST", "/v1/campaigns"),
                         ("POST", "/v1/voice-broadcasts")})  # 100,000 numbers are some 3 MB


def body_limit(method: str, path_template: str) -> int:
    """The limit of the route `path_template` (as declared, such as /v1/accounts/{account_id})."""
    return MAX_BULK_BODY_BYTES if (method, path_template) in BULK_ROUTES else MAX_BODY_BYTES


@web.middleware
async def body_limit_middleware(request: web.Request, handler):
    resource = request.match_info.route.resource
    limit = body_limit(request.method, resource.canonical if resource is not None else "")
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, "Content Too Large", f"The body is {request.content_length:,} bytes; this route takes at "
                                                f"most {limit:,} bytes.", max_bytes=limit)
    try:
        return await handler(request.clone(client_max_size=limit))
    except web.HTTPRequestEntityTooLarge:  # a chunked body that passed the limit while being read
        raise Problem(413, "Content Too Large", f"The body is larger than the {limit:,} bytes this route takes.",
                      max_bytes=limit) from None
