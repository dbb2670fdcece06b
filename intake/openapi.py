"""The served OpenAPI document, assembled from the paths each route module declares."""

from types import ModuleType

PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
        "available": {"type": "string"},
        "required": {"type": "string"},
        "limit": {"type": "integer", "description": "429 from a daily send cap: messages a day"},
        "resets_at": {"type": "string", "format": "date-time", "description": "429 from a daily send cap"},
    },
}


def build_document(modules: list[ModuleType]) -> dict:
    paths: dict = {}
    for module in modules:
        for path, operations in module.OPENAPI_PATHS.items():
            paths.setdefault(path, {}).update(operations)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "creditq",
            "version": "1",
            "description": "Credit-metered messaging. Credits are decimal strings; errors are application/problem+json.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Problem": PROBLEM_SCHEMA},
        },
        "paths": dict(sorted(paths.items())),
    }
