"""The served contract describes the errors: every operation is named once, lists the error answers the
frame and its own checks can give by reference to shared components, and every $ref resolves."""

import pytest

from intake.app import init_app

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
async def document(aiohttp_client, settings, sqlite_database, fake_broker) -> dict:
    client = await aiohttp_client(init_app(settings, database=sqlite_database, broker=fake_broker))
    response = await client.get("/v1/openapi.json")
    assert response.status == 200
    return await response.json()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method], item.get("parameters", []) + item[method].get("parameters", [])


def resolve(document: dict, reference: str):
    assert reference.startswith("#/"), reference
    node = document
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def references(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from references(value)
    elif isinstance(node, list):
        for value in node:
            yield from references(value)


async def test_every_operation_has_an_operation_id_and_no_two_share_one(document):
    ids = [operation.get("operationId") for _, _, operation, _ in operations(document)]

    assert None not in ids
    assert len(ids) == len(set(ids)) > 30


async def test_every_reference_in_the_document_resolves(document):
    found = list(references(document))

    assert len(found) > 100
    for reference in found:
        assert resolve(document, reference) is not None


async def test_error_answers_are_references_to_shared_problem_responses(document):
    problem = {"$ref": "#/components/schemas/Problem"}
    for name, response in document["components"]["responses"].items():
        assert response["content"]["application/problem+json"]["schema"] == problem, name

    for path, method, operation, _ in operations(document):
        for status, response in operation["responses"].items():
            if status.startswith(("4", "5")):
                assert response["$ref"].startswith("#/components/responses/"), (method, path, status)
                assert "content" not in response, (method, path, status)  # never an inline copy
                assert resolve(document, response["$ref"]) is not None


async def test_every_operation_lists_the_answers_of_the_frame_and_of_its_own_parameters(document):
    for path, method, operation, parameters in operations(document):
        where = f"{method.upper()} {path}"
        answers = set(operation["responses"])
        names = {(parameter["in"], parameter["name"]) for parameter in parameters}
        assert "400" in answers, where  # NUL in the path or query, an unreadable body
        if operation.get("security") != []:
            assert "401" in answers, where
        if "requestBody" in operation:
            assert "413" in answers, where
        if path.startswith("/v1/accounts/{account_id}") or "{" in path and method in ("get", "delete"):
            assert "404" in answers, where
        if ("header", "Idempotency-Key") in names:
            assert "409" in answers, where
        if names & {("query", "limit"), ("query", "cursor"), ("query", "account_id")}:
            assert "422" in answers, where
        if "requestBody" in operation and "application/json" in operation["requestBody"]["content"] \
                and operation.get("security") != []:
            assert "422" in answers, where


async def test_the_body_limits_are_in_the_contract(document):
    too_large = document["components"]["responses"]["ContentTooLarge"]["description"]

    assert "1 MiB" in too_large and "20 MiB" in too_large


async def test_every_link_names_an_operation_and_fills_its_path_parameters(document):
    by_id = {operation["operationId"]: (path, parameters) for path, _, operation, parameters in operations(document)}
    links = [(operation["operationId"], link) for _, _, operation, _ in operations(document)
             for response in operation["responses"].values() for link in response.get("links", {}).values()]

    assert len(links) > 20
    for source, link in links:
        path, parameters = by_id[link["operationId"]]
        path_parameters = {parameter["name"] for parameter in parameters if parameter["in"] == "path"}
        assert path_parameters <= set(link["parameters"]), (source, link["operationId"])
