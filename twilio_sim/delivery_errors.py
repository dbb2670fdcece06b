"""The error codes Twilio gives a message that ends `undelivered` or `failed`, with their messages.

An outcome names its status alone (`undelivered`: one of that status' usual codes at random) or its
status and code (`undelivered:30007`, `failed:30034`), so a test can make carriers filter a text.
"""

from __future__ import annotations

UNDELIVERED_ERRORS: dict[int, str] = {
    30003: "Unreachable destination handset",
    30004: "Message blocked",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30007: "Message filtered",
    30008: "Unknown error",
}
FAILED_ERRORS: dict[int, str] = {
    30001: "Queue overflow",
    30002: "Account suspended",
}
# Given only when an outcome names them: a sender's registration problem, not a carrier's whim.
NAMED_ONLY_ERRORS: dict[int, str] = {
    30034: "Message from an Unregistered Number",
}
ERROR_MESSAGES = {**UNDELIVERED_ERRORS, **FAILED_ERRORS, **NAMED_ONLY_ERRORS}
RANDOM_ERRORS = {"undelivered": UNDELIVERED_ERRORS, "failed": FAILED_ERRORS}
OUTCOMES = ("delivered", *RANDOM_ERRORS)


def split_outcome(outcome: str) -> tuple[str, int | None]:
    """`undelivered:30007` -> ("undelivered", 30007); `failed` -> ("failed", None). ValueError when not an outcome."""
    status, _, code = outcome.partition(":")
    if status not in OUTCOMES or (code and status == "delivered"):
        raise ValueError(f"outcomes are {', '.join(OUTCOMES)}, or undelivered or failed with a code "
                         "(undelivered:30007)")
    if not code:
        return status, None
    if not code.isascii() or not code.isdigit() or int(code) not in ERROR_MESSAGES:
        raise ValueError(f"{code} is not a message error code the simulator knows "
                         f"({', '.join(map(str, sorted(ERROR_MESSAGES)))})")
    return status, int(code)
