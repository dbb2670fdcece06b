"""One module per resource; each exposes `routes` (a RouteTableDef) and `OPENAPI_PATHS`."""
