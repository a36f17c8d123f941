"""The HTTP edge and the GraphQL protections: auth, body limit, batching, GET, limits,
error masking with request ids, and the parser/validation caches."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send
from strawberry.extensions.parser_cache import _get_parse_cache
from strawberry.extensions.validation_cache import _get_validate_cache

from app import __version__
from app.api.schema import CACHE_SIZE, MAX_ALIASES, MAX_DEPTH, MAX_TOKENS
from app.db.tables import ApiToken
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.http import EdgeMiddleware
from app.services.accounts import hash_token, new_token
from tests.api.ops import mutate
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account
from tests.storage.asgi import raw_asgi

VIEWER = "{ viewer { account { name } } }"
MUTATION = 'mutation { createApiToken(input: {name: "x"}) { __typename } }'
HEALTH = "{ health { ok version } }"


def assert_401(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Bearer realm="ims"'
    assert response.json() == {"errors": [{"message": "authentication required: Authorization: Bearer <token>"}]}


async def _revoked_token(gql: GraphQLClient, db: Database) -> str:
    _, token = await make_account(db)
    tokens = (await gql.as_(token).execute("{ viewer { apiTokens { id } } }"))["viewer"]["apiTokens"]
    revoked = await mutate(gql.as_(token), "revokeApiToken", {"id": tokens[0]["id"]},
                           "... on RevokeApiTokenSuccess { revokedId }")
    assert revoked["revokedId"] == tokens[0]["id"]
    return token


async def _expired_token(db: Database) -> str:
    account, _ = await make_account(db)
    token = new_token()
    async with db.uow() as uow:
        await uow.accounts.add_token(ApiToken(id=new_id("tok"), account_id=account.id, name="old",
                                              token_hash=hash_token(token), created_at=utcnow() - timedelta(days=2),
                                              expires_at=utcnow() - timedelta(seconds=1)))
        await uow.commit()
    return token


async def test_queries_and_mutations_need_a_valid_token(gql: GraphQLClient, db: Database,
                                                        http: httpx.AsyncClient) -> None:
    revoked = await _revoked_token(gql, db)
    expired = await _expired_token(db)
    for headers in ({}, {"authorization": "Bearer ims_not-a-token"}, {"authorization": f"Bearer {revoked}"},
                    {"authorization": f"Bearer {expired}"}, {"authorization": "Basic YWRtaW46YWRtaW4="},
                    {"authorization": "Bearer " + "x" * 300}, {"authorization": "Bearer"}):
        for document in (VIEWER, MUTATION, "{ regions { id } }", "{ __schema { queryType { name } } }"):
            assert_401(await http.post("/graphql", json={"query": document}, headers=headers))
        assert_401(await http.get("/graphql", params={"query": "{ regions { id } }"}, headers=headers))
    # Nothing was executed on behalf of anyone.
    assert (await gql.as_(revoked).raw(VIEWER)).status_code == 401


async def test_health_answers_without_a_token(http: httpx.AsyncClient) -> None:
    for document in (HEALTH, "query Probe { __typename health { ok } }"):
        response = await http.post("/graphql", json={"query": document})
        assert response.status_code == 200, document
        assert "errors" not in response.json()
    assert (await http.post("/graphql", json={"query": HEALTH})).json() == {
        "data": {"health": {"ok": True, "version": __version__}}}
    get = await http.get("/graphql", params={"query": HEALTH}, headers={"accept": "application/json"})
    assert (get.status_code, get.json()["data"]["health"]["ok"]) == (200, True)
    plain = await http.get("/health")
    assert (plain.status_code, plain.json()) == (200, {"ok": True, "version": __version__})


async def test_health_cannot_smuggle_other_fields(http: httpx.AsyncClient) -> None:
    smuggled = [
        "{ health { ok } viewer { account { name } } }",
        "{ health { ok } regions { id } }",
        "{ ...F } fragment F on Query { health { ok } }",
        "mutation { __typename }",
        "query A { health { ok } } query B { viewer { account { name } } }",
        "{ health { ok } __schema { types { name } } }",
        "{ health { ok ",  # unparsable
    ]
    for document in smuggled:
        assert_401(await http.post("/graphql", json={"query": document}))
    assert_401(await http.post("/graphql", json=[{"query": HEALTH}]))
    assert_401(await http.post("/graphql", content=b"not json", headers={"content-type": "application/json"}))


async def test_get_with_an_html_accept_header_does_not_skip_authentication(http: httpx.AsyncClient) -> None:
    for document in ("{ regions { id } }", "{ __schema { queryType { name } } }", VIEWER):
        response = await http.get("/graphql", params={"query": document}, headers={"accept": "text/html"})
        assert_401(response)
    # Without a query it is the GraphiQL page (503 when its npm assets are not installed).
    page = await http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code in (200, 503)
    assert page.headers["content-type"].startswith("text/html")


async def test_a_repeated_graphql_parameter_in_the_query_string_is_refused(
    gql: GraphQLClient, http: httpx.AsyncClient
) -> None:
    """The edge checks one `query` for the 401 and Strawberry would run another: a query
    string naming a GraphQL parameter twice is refused before either looks at it."""
    smuggled = httpx.QueryParams([("query", HEALTH), ("query", "{ regions { id } }")])
    for headers in ({}, {"authorization": f"Bearer {gql.token}"}):
        response = await http.get("/graphql", params=smuggled, headers={"accept": "application/json", **headers})
        assert (response.status_code, response.json()) == (
            400, {"errors": [{"message": "query string parameter 'query' given more than once"}]})
        assert response.headers["x-request-id"]
    for name, value in (("variables", "{}"), ("operationName", "A"), ("extensions", "{}")):
        response = await http.get("/graphql", params=[("query", "query A { regions { id } }"), (name, value), (name, value)],
                                  headers={"accept": "application/json", "authorization": f"Bearer {gql.token}"})
        assert (response.status_code, response.json()) == (
            400, {"errors": [{"message": f"query string parameter '{name}' given more than once"}]})
    # A percent-encoded name is the same parameter to Starlette, so it is to the edge.
    encoded = await http.get("/graphql?query=%7Bhealth%7Bok%7D%7D&q%75ery=%7Bregions%7Bid%7D%7D",
                             headers={"accept": "application/json"})
    assert encoded.status_code == 400
    # Once each, the same request runs; other parameters may repeat.
    single = await http.get("/graphql", params=[("query", "{ regions { id } }"), ("x", "1"), ("x", "2")],
                            headers={"accept": "application/json", "authorization": f"Bearer {gql.token}"})
    assert (single.status_code, single.json()) == (200, {"data": {"regions": [{"id": "region-1"}]}})


async def test_request_body_over_one_mebibyte_is_refused(gql: GraphQLClient, http: httpx.AsyncClient) -> None:
    limit = 1024 * 1024
    headers = {"authorization": f"Bearer {gql.token}", "content-type": "application/json"}
    padding = " " * (limit - len('{"query": "{ health { ok } }"}'))
    at_limit = ('{"query": "{ health { ok } }"}' + padding).encode()
    assert len(at_limit) == limit
    ok = await http.post("/graphql", content=at_limit, headers=headers)
    assert (ok.status_code, ok.json()) == (200, {"data": {"health": {"ok": True}}})
    over = await http.post("/graphql", content=at_limit + b" ", headers=headers)
    assert (over.status_code, over.json()) == (413, {"errors": [{"message": "request body over 1 MiB"}]})

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while reading
        for _ in range(17):
            yield b" " * 65536

    streamed = await http.post("/graphql", content=chunks(), headers=headers)
    assert streamed.status_code == 413


async def test_a_content_length_of_any_length_is_a_number() -> None:
    """One over int()'s 4300 digits was an internal error (ValueError) of the edge."""
    calls: list[str] = []

    async def authenticate(token: str) -> None:
        calls.append(token)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await PlainTextResponse("ran")(scope, receive, send)

    edge = EdgeMiddleware(app, authenticate)
    body = json.dumps({"query": HEALTH}).encode()
    huge = await raw_asgi(edge, "POST", "/graphql", body=body, headers={"content-length": "9" * 5000})
    padded = await raw_asgi(edge, "POST", "/graphql", body=body,
                            headers={"content-length": "0" * 5000 + str(len(body)), "content-type": "application/json"})
    assert huge == (413, b'{"errors": [{"message": "request body over 1 MiB"}]}')
    assert padded == (200, b"ran")


async def test_batched_requests_are_refused_and_nothing_runs(gql: GraphQLClient, http: httpx.AsyncClient) -> None:
    batch = [{"query": 'mutation { createAccount(input: {name: "batched-one"}) { __typename } }'},
             {"query": 'mutation { createAccount(input: {name: "batched-two"}) { __typename } }'}]
    response = await http.post("/graphql", json=batch, headers={"authorization": f"Bearer {gql.token}"})
    assert 400 <= response.status_code < 500
    assert "batched" not in response.text
    names = {e["node"]["name"] for e in (await gql.execute("{ accounts { edges { node { name } } } }"))[
        "accounts"]["edges"]}
    assert names == {"admin"}


async def test_a_body_that_is_not_a_json_object_is_a_client_error(
    gql: GraphQLClient, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A JSON string or number where the request object goes was an internal error (500)."""
    headers = {"authorization": f"Bearer {gql.token}", "content-type": "application/json"}
    with caplog.at_level(logging.ERROR):
        for body in (b'"{ health { ok } }"', b"42", b"null", b"true"):
            response = await http.post("/graphql", content=body, headers=headers)
            assert (response.status_code, response.json()) == (
                400, {"errors": [{"message": "the request body must be a JSON object"}]}), body
        malformed = await http.post("/graphql", content=b"{not json", headers=headers)
        assert malformed.status_code == 400
        # What Python's parser cannot take is malformed too, never an internal error (500).
        deep = b'{"query": "{ health { ok } }", "variables": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        for body in (b'{"query": "{ health { ok } }\xff"}', deep,
                     b'{"query": "{ health { ok } }", "variables": {"n": ' + b"9" * 5000 + b"}}"):
            response = await http.post("/graphql", content=body, headers=headers)
            assert (response.status_code, response.text) == (400, "Unable to parse request body as JSON"), body[:40]
            anonymous = await http.post("/graphql", content=body, headers={"content-type": "application/json"})
            assert anonymous.status_code in (400, 401), body[:40]
        for variables in ("[" * 5000 + "]" * 5000, "9" * 5000):
            response = await http.get("/graphql", params={"query": "{ health { ok } }", "variables": variables},
                                      headers=headers)
            assert response.status_code == 400, (response.status_code, response.text[:200])
        # Subscriptions go over the websocket only.
        subscription = await http.post("/graphql", json={"query": 'subscription { jobUpdated(id: "job-x") { id } }'},
                                       headers=headers)
        assert (subscription.status_code, subscription.text) == (400, "subscriptions are not allowed when using POST")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_mutations_are_refused_over_get(gql: GraphQLClient, db: Database, http: httpx.AsyncClient) -> None:
    _, token = await make_account(db)
    headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
    refused = await http.get("/graphql", params={"query": MUTATION}, headers=headers)
    assert refused.status_code in (400, 405)
    assert "mutations are not allowed" in refused.text
    tokens = (await gql.as_(token).execute("{ viewer { apiTokens { name } } }"))["viewer"]["apiTokens"]
    assert [t["name"] for t in tokens] == ["t"]  # only the factory's token
    query = await http.get("/graphql", params={"query": VIEWER}, headers=headers)
    assert query.status_code == 200 and query.json()["data"]["viewer"]["account"]["name"].startswith("user-")


async def test_the_media_type_of_a_body_is_case_insensitive(gql: GraphQLClient, http: httpx.AsyncClient) -> None:
    """RFC 9110 §8.3.1: `Application/JSON` is `application/json` (it was 400 Unsupported
    content type); a type that is not JSON still is."""
    token = {"authorization": f"Bearer {gql.token}"}
    for content_type in ("Application/JSON", "APPLICATION/JSON; charset=UTF-8"):
        response = await http.post("/graphql", content=json.dumps({"query": "{ regions { id } }"}).encode(),
                                   headers={**token, "content-type": content_type})
        assert (response.status_code, response.json()) == (200, {"data": {"regions": [{"id": "region-1"}]}})
    other = await http.post("/graphql", content=b'{"query": "{ regions { id } }"}',
                            headers={**token, "content-type": "Text/Plain"})
    assert (other.status_code, other.text) == (400, "Unsupported content type")


async def test_a_method_a_path_does_not_take_is_405_with_the_ones_it_does(
    gql: GraphQLClient, http: httpx.AsyncClient
) -> None:
    """The signed-URL routes sit behind every other route: a method /graphql, /health or
    /metrics do not take fell through to them and was answered 404, as if the path did not exist."""
    token = {"authorization": f"Bearer {gql.token}"}
    for method, path, allowed in (("PUT", "/graphql", {"GET", "HEAD", "POST"}), ("DELETE", "/graphql", {"GET", "HEAD", "POST"}),
                                  ("POST", "/health", {"GET", "HEAD"}), ("PUT", "/metrics", {"GET", "HEAD"})):
        response = await http.request(method, path, headers=token, content=b"{}")
        assert response.status_code == 405, (method, path)
        assert set(response.headers["allow"].split(", ")) == allowed, (method, path)
    missing = await http.get("/nothing-here")
    assert missing.status_code == 404
    assert (await http.get("/objects/bucket-a/key")).status_code == 403  # unsigned, still routed


# ---------------------------------------------------------------- document limits


def _nested(depth: int) -> str:
    """A query whose deepest field sits `depth` levels below the root field."""
    return "{ " + "a { " * depth + "b" + " }" * depth + " }"


async def _errors(gql: GraphQLClient, document: str) -> list[str]:
    response = await gql.raw(document)
    assert response.status_code == 200
    return [e["message"] for e in response.json().get("errors", [])]


async def test_depth_limit(gql: GraphQLClient) -> None:
    assert MAX_DEPTH == 12
    depth_error = "'anonymous' exceeds maximum operation depth of 12"
    # The schema has no legal path 12 levels deep, so the documents use unknown fields:
    # the other validation errors are there either way, the depth error only past 12.
    assert depth_error in await _errors(gql, _nested(13))
    assert depth_error not in await _errors(gql, _nested(12))
    deepest_real = """{ images { edges { node { ... on PrivateImage {
        members { edges { node { account { name } } } } } } } } }"""
    assert await _errors(gql, deepest_real) == []


async def test_alias_limit(gql: GraphQLClient) -> None:
    assert MAX_ALIASES == 30

    def aliased(n: int) -> str:
        return "{ " + " ".join(f"h{i}: health {{ ok }}" for i in range(n)) + " }"

    ok = await gql.raw(aliased(30))
    assert ok.status_code == 200 and "errors" not in ok.json() and len(ok.json()["data"]) == 30
    assert await _errors(gql, aliased(31)) == ["31 aliases found. Allowed: 30"]


async def test_token_limit(gql: GraphQLClient) -> None:
    assert MAX_TOKENS == 5000

    def tokens(n: int) -> str:  # 16 punctuators and names, plus n - 16 strings
        return '{ images(filter: {ids: [' + '"x" ' * (n - 16) + ']}) { totalCount } }'

    ok = await gql.raw(tokens(5000))
    assert ok.status_code == 200 and ok.json() == {"data": {"images": {"totalCount": 0}}}
    [message] = await _errors(gql, tokens(5001))
    assert message == "Syntax Error: Document contains more than 5000 tokens. Parsing aborted."


# ---------------------------------------------------------------- masking and logging


async def test_unexpected_errors_are_masked_and_logged_with_the_request_id(
    gql: GraphQLClient, http: httpx.AsyncClient, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    services = live_server.app.state.runtime.services

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("boom: SELECT token_hash FROM api_tokens")

    monkeypatch.setattr(services.accounts, "quotas", broken)
    with caplog.at_level(logging.ERROR, logger="app.api"):
        response = await gql.raw("{ viewer { account { name } quotas { used } } }")
        chosen = await http.post("/graphql", json={"query": "{ viewer { quotas { used } } }"},
                                 headers={"authorization": f"Bearer {gql.token}", "x-request-id": "my-req.42"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None  # quotas is non-null, so viewer (non-null) collapses too
    assert body["errors"] == [{"message": "Internal server error", "locations": [{"line": 1, "column": 29}],
                               "path": ["viewer", "quotas"]}]
    for leak in ("boom", "SELECT", "token_hash", "Traceback", "RuntimeError"):
        assert leak not in response.text
    request_id = response.headers["x-request-id"]
    assert len(request_id) == 16
    assert chosen.headers["x-request-id"] == "my-req.42"

    logged = [r for r in caplog.records if r.name == "app.api"]
    assert [r.getMessage() for r in logged] == [
        f"request {request_id}: unexpected error in ['viewer', 'quotas']",
        "request my-req.42: unexpected error in ['viewer', 'quotas']",
    ]
    for record in logged:
        assert record.levelno == logging.ERROR
        assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


async def test_invalid_incoming_request_ids_are_replaced(http: httpx.AsyncClient) -> None:
    response = await http.post("/graphql", json={"query": HEALTH}, headers={"x-request-id": "bad id\twith spaces"})
    assert response.headers["x-request-id"] != "bad id\twith spaces"
    assert len(response.headers["x-request-id"]) == 16


# ---------------------------------------------------------------- caches


async def test_parser_and_validation_caches_hit_across_requests(gql: GraphQLClient) -> None:
    # The module-level LRU caches the extensions share (functools' cache_info is untyped here).
    parse_cache: Any = _get_parse_cache(CACHE_SIZE)
    validate_cache: Any = _get_validate_cache(CACHE_SIZE)
    document = f"query Unique{secrets.token_hex(6)} {{ viewer {{ account {{ name }} }} }}"
    await gql.execute(document)
    parse_before, validate_before = parse_cache.cache_info(), validate_cache.cache_info()
    await gql.execute(document)
    parse_after, validate_after = parse_cache.cache_info(), validate_cache.cache_info()
    assert parse_after.hits == parse_before.hits + 1
    assert parse_after.misses == parse_before.misses
    assert validate_after.hits == validate_before.hits + 1
    assert validate_after.misses == validate_before.misses


NUL_REFUSED = {"message": "NUL characters are not accepted", "extensions": {"code": "INVALID_CHARACTER"}}
SURROGATE_REFUSED = {"message": "unpaired surrogates are not accepted: text must be valid Unicode",
                     "extensions": {"code": "INVALID_CHARACTER"}}


async def test_nul_characters_and_unpaired_surrogates_are_refused_everywhere(
    gql: GraphQLClient, db: Database, live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL cannot store NUL in text and no name, key or id may hold one; an unpaired
    surrogate is not Unicode text and cannot be stored at all. Both are refused in variables
    and in the document's literals (every spelling, at any depth), over POST, GET and the
    websocket, with INVALID_CHARACTER (HTTP 400), and nothing runs."""
    from tests.api.ws import socket
    from tests.factories import make_image

    owner, token = await make_account(db)
    image = await make_image(db, owner, description="before")
    me = gql.as_(token)
    auth = {"authorization": f"Bearer {token}", "accept": "application/json"}

    async def post(query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        # json.dumps escapes a lone surrogate as \ud800, which is what a client sends.
        return await me.http.post("/graphql", content=json.dumps({"query": query, "variables": variables or {}}),
                                  headers={**auth, "content-type": "application/json"})

    update = "mutation($id: ID!, $d: String) { updateImage(input: {id: $id, description: $d}) { __typename } }"

    def literal(description: str) -> str:
        return f'mutation {{ updateImage(input: {{id: "{image.id}", description: {description}}}) {{ __typename }} }}'

    tags = f'mutation {{ addImageTags(input: {{imageId: "{image.id}", tags: [{{key: "k", value: "v\\u{{0}}"}}]}}) {{ __typename }} }}'
    get_image = "query($id: ID!) { image(id: $id) { __typename } }"
    refused_over_http = {
        "NUL in a variable": (NUL_REFUSED, await post(update, {"id": image.id, "d": "a\x00b"})),
        "NUL in a nested variable": (NUL_REFUSED, await post(
            "mutation($i: ImageTagsInput!) { addImageTags(input: $i) { __typename } }",
            {"i": {"imageId": image.id, "tags": [{"key": "k", "value": "v\x00"}]}})),
        "\\u0000 in a literal": (NUL_REFUSED, await post(literal('"a\\u0000b"'))),
        "\\u{0} in a literal": (NUL_REFUSED, await post(literal('"a\\u{0}b"'))),
        "\\u{000000} in a literal": (NUL_REFUSED, await post(literal('"a\\u{000000}b"'))),
        "raw NUL in a block string": (NUL_REFUSED, await post(literal('"""a\x00b"""'))),
        "\\u{0} in an object in a list": (NUL_REFUSED, await post(tags)),
        "\\u{0} in a variable's default": (NUL_REFUSED, await post(
            f'mutation($d: String = "\\u{{0}}") {{ updateImage(input: {{id: "{image.id}", description: $d}}) '
            "{ __typename } }")),
        "surrogate in a variable": (SURROGATE_REFUSED, await post(update, {"id": image.id, "d": "a\ud800b"})),
        "surrogate in a literal": (SURROGATE_REFUSED, await post(literal('"a\ud800b"'))),
        "\\u{0} over GET": (NUL_REFUSED, await me.http.get(
            "/graphql", params={"query": '{ image(id: "x\\u{0}") { __typename } }'}, headers=auth)),
        "NUL in a variable over GET": (NUL_REFUSED, await me.http.get(
            "/graphql", params={"query": get_image, "variables": json.dumps({"id": "img-\x00"})}, headers=auth)),
        "surrogate in a variable over GET": (SURROGATE_REFUSED, await me.http.get(
            "/graphql", params={"query": get_image, "variables": json.dumps({"id": "img-\ud800"})}, headers=auth)),
    }
    answers = {case: (response.status_code, response.json()) for case, (_, response) in refused_over_http.items()}
    assert {case: (status, body.get("errors")) for case, (status, body) in answers.items()} == {
        case: (400, [error]) for case, (error, _) in refused_over_http.items()}
    assert all(body.get("data") is None for _, body in answers.values())

    subscription = "subscription($id: ID!) { jobUpdated(id: $id) { id } }"
    async with socket(live_server.url, token) as ws:
        await ws.subscribe("1", subscription, {"id": "job-\x00"})
        await ws.subscribe("2", subscription, {"id": "job-\ud800"})
        await ws.subscribe("3", 'subscription { jobUpdated(id: "job-\\u{0}") { id } }')
        for op_id, error in (("1", NUL_REFUSED), ("2", SURROGATE_REFUSED), ("3", NUL_REFUSED)):
            assert await ws.until_done(op_id) == [{"id": op_id, "type": "error", "payload": [error]}]

    # graphql-core itself refuses a surrogate spelled as a GraphQL escape.
    escaped = await post(literal('"a\\ud800b"'))
    assert escaped.status_code == 200
    assert escaped.json()["errors"][0]["message"] == "Syntax Error: Invalid Unicode escape sequence: '\\ud800'."

    data = await me.execute("query($id: ID!) { image(id: $id) { ... on ImageBase { description version tags { key } } } }",
                            {"id": image.id})
    assert data["image"] == {"description": "before", "version": image.version, "tags": []}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    # A backslash that is not a NUL escape is ordinary text, and so are paired surrogates.
    for text in ("C:\\\\u0001 path", "\\u{0}", "smile \U0001f600"):
        fine = await me.execute(update, {"id": image.id, "d": text})
        assert fine["updateImage"]["__typename"] == "UpdateImageSuccess"
    assert (await post(literal('"\\uD83D\\uDE00 \\u{1F600}"'))).json() == {
        "data": {"updateImage": {"__typename": "UpdateImageSuccess"}}}


async def test_variables_that_do_not_fit_their_types_are_shown_not_masked(
    gql: GraphQLClient, caplog: pytest.LogCaptureFixture
) -> None:
    """graphql-core reports a variable outside its enum as an error wrapping its own: the
    client's mistake, shown with graphql-core's message, never an internal error."""
    create = "mutation($input: CreateAccountInput!) { createAccount(input: $input) { __typename } }"
    with caplog.at_level(logging.ERROR, logger="app.api"):
        for value, expected in (
            ({"name": "zz-role", "role": "bogus"},
             "Variable '$input' has invalid value at .role: Value 'bogus' does not exist in 'AccountRole' enum."),
            ({"name": None},
             "Variable '$input' has invalid value at .name: Expected value of non-null type 'String!' not to be None."),
        ):
            response = await gql.raw(create, {"input": value})
            [error] = response.json()["errors"]
            assert error["message"] == expected, error
    assert [r.getMessage() for r in caplog.records if r.name == "app.api"] == []
