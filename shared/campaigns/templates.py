"""Message bodies as Liquid templates (python-liquid), rendered once per recipient with their fields.

Undefined is strict: a template that names a field a recipient does not have is refused when the
campaign is created, never sent with a hole in it (unless it says `| default: "..."`). Every refusal
names the template's field (`body`, `steps[1].body`) and the line in it. A body is a text message:
no includes, and what a render may do is bounded (shared.messaging.liquid_limits).
"""

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from liquid import StrictDefaultUndefined
from liquid.exceptions import LiquidError, UndefinedError
from liquid.stringify import to_liquid_string

from shared.errors import ValidationFailed
from shared.messaging.liquid_limits import BoundedEnvironment

ENVIRONMENT = BoundedEnvironment(undefined=StrictDefaultUndefined)


_LITERALS = frozenset({"true", "false", "nil", "null", "empty", "blank"})  # Liquid prints these, not a field
_PLAIN_OUTPUT = re.compile(r"\{\{ *([A-Za-z_][A-Za-z0-9_]*) *\}\}")


@dataclass(frozen=True)
class MessageTemplate:
    source: str
    field: str  # where the template came from, for error messages
    compiled: object  # liquid.BoundTemplate
    names: frozenset[str]  # the top-level variables it reads
    plain: tuple[str, ...] | None = None  # text and bare `{{ name }}` only: text, name, text, name, ..., text

    def render(self, fields: Mapping[str, object]) -> str:
        """Most campaign bodies are text with bare fields: joined as Liquid would print them, in a tenth of
        Liquid's time. Anything else, or a field missing (Liquid's error names it), renders through Liquid."""
        if self.plain is not None and (body := self._joined(fields)) is not None:
            return body
        return self.compiled.render(**fields)

    def _joined(self, fields: Mapping[str, object]) -> str | None:
        """None where Liquid must render: a field missing (its error names it), or a carriage return (Liquid's
        output turns them into newlines)."""
        try:
            body = "".join(piece if index % 2 == 0 else to_liquid_string(fields[piece], False)
                           for index, piece in enumerate(self.plain))
        except KeyError:
            return None
        return None if "\r" in body else body


def compile_template(source: object, *, field: str = "body", known_fields: Collection[str] | None = None
                     ) -> MessageTemplate:
    """Parse `source`; with `known_fields`, refuse any variable outside them. Raises ValidationFailed."""
    if not isinstance(source, str) or not source.strip():
        raise ValidationFailed(f"{field} is required: the message text", errors={field: "is required"})
    try:
        compiled = ENVIRONMENT.from_string(source)
    except LiquidError as error:
        raise _refusal(field, error, f"is not a valid template: {error.message}") from None
    analysis = compiled.analyze()
    if known_fields is not None:
        for name, uses in analysis.globals.items():
            if name not in known_fields:
                line, _column = uses[0].span.line_col(source)
                known = ", ".join(sorted(known_fields)) or "none"
                reason = f"line {line}: unknown field {name!r} (the recipients have: {known})"
                raise ValidationFailed(f"{field} {reason}", errors={field: reason})
    return MessageTemplate(source=source, field=field, compiled=compiled, names=frozenset(analysis.globals),
                           plain=_plain_pieces(source))


def _plain_pieces(source: str) -> tuple[str, ...] | None:
    """Text and bare outputs split apart (re.split keeps the names at odd places); None when there is more."""
    pieces = tuple(_PLAIN_OUTPUT.split(source))
    if any("{{" in text or "{%" in text for text in pieces[::2]) or not _LITERALS.isdisjoint(pieces[1::2]):
        return None
    return pieces


def render(template: MessageTemplate, fields: Mapping[str, object], *, recipient: str) -> str:
    """The body for one recipient; a field it lacks raises ValidationFailed naming the recipient, field and line."""
    try:
        return template.render(fields)
    except UndefinedError as error:
        raise _refusal(template.field, error, f"{recipient} lacks a field it uses ({error.message})") from None
    except LiquidError as error:
        raise _refusal(template.field, error, f"cannot be rendered for {recipient}: {error.message}") from None


def _refusal(field: str, error: LiquidError, reason: str) -> ValidationFailed:
    context = error.context()
    if context is not None:
        reason = f"line {context[0]}: {reason}"
    return ValidationFailed(f"{field} {reason}", errors={field: reason})
