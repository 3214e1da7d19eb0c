"""Path spelling (docs/architecture.md §7 "Complete mediation"): every spelling of a guarded route's path that some
server routes to it is checked, and forwarded as the path the guardrail matched; a path whose meaning
hangs on how a server reads an encoded `/` or `\\` is refused with 400; `..` never climbs out of the
sidecar's upstream prefix; the guardrail's own paths keep every spelling to themselves."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from guardrail import GuardrailMiddleware, PolicyError
from guardrail.policy.models import Policy
from guardrail.sidecar.proxy import ReverseProxy
from tests.attacks.support_paths import ROUTES, Answer, asgi_get, items_upstream, raw_get, sidecar, targets
from tests.conftest import BASE_POLICY, make_policy
from tests.sidecar.servers import serving
from tests.upstream import Upstream

# Spellings of /list that frameworks route to /list: case (Java's equalsIgnoreCase: dotless i and long s
# upper-case to I and S), trailing and repeated slashes (Flask, Express), `;` parameters (servlets), dot segments and
# percent-encoded letters and dots (RFC 3986: the same path).
LIST_SPELLINGS = [
    "/List",
    "/LIST",
    "/list/",
    "//list",
    "/list//",
    "/list;x=1",
    "/list;",
    "/LIST;jsessionid=1/",
    "/./list",
    "/list/.",
    "/a/../list",
    "/../list",
    "/a/b/../../list",
    "/a/..;x/list",
    "/%6cist",
    "/%6C%69%73%74",
    "/%2e/list",
    "/%2E%2E/list",
    "/a/%2e%2e/list",
    "/a/.%2E/list",
    "/l%C4%B1st",
    "/li%C5%BFt",
]
FEED_SPELLINGS = ["/FEED/home", "//feed//home", "/x/../feed/home", "/feed;v=1/home", "/Feed/./home", "/feed/a/../home"]
# An encoded `/` or `\` (or a bare `\`, a separator on Windows servers) that some servers split on and
# others do not, or an encoded `;` some take for parameters, where it decides the route or hides a dot
# segment (also in `;` parameters, which servers that decode first do not strip): refused.
AMBIGUOUS = [
    "/list%2f",
    "/list%2F",
    "/list%5c",
    "/list\\",
    "/x/..%2flist",
    "/x/..%2Flist",
    "/%2e%2e%2flist",
    "/x/..%5clist",
    "/x/..\\list",
    "/x%2f..%2flist",
    "/x;%2f../list",
    "/;%2flist",
    "/list%3Bx",
]
API_SPELLINGS = [
    "//guardrail/v1/controls",
    "/guardrail//v1/controls",
    "/x/../guardrail/v1/controls",
    "/GUARDRAIL/v1/controls",
    "/guardrail;x/v1/controls",
    "/%67uardrail/v1/controls",
]
GPC_SPELLINGS = [
    "//.well-known/gpc.json",
    "/.well-known//gpc.json",
    "/.WELL-KNOWN/GPC.JSON",
    "/x/../.well-known/gpc.json",
    "/.well-known/gpc.json/",
]


def guarded(upstream: Any, policy: Policy | None = None) -> GuardrailMiddleware:
    return GuardrailMiddleware(upstream, policy=policy or make_policy(routes=ROUTES), registry=CollectorRegistry())


def refused(answer: Answer) -> bool:
    return (
        answer.status == 400
        and answer.headers["content-type"] == "application/problem+json"
        and "path" in answer.json()["detail"]
    )


# -- in process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", LIST_SPELLINGS)
async def test_every_spelling_of_a_guarded_path_is_checked_and_forwarded_as_the_route(target: str) -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), target)
    assert answer.status == 200
    assert answer.checked
    assert (upstream.seen[-1]["path"], upstream.seen[-1]["raw_path"]) == ("/list", b"/list")


@pytest.mark.parametrize("target", FEED_SPELLINGS)
async def test_a_prefix_route_matches_the_normalized_path(target: str) -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), target)
    assert answer.checked
    assert (upstream.seen[-1]["path"], upstream.seen[-1]["raw_path"]) == ("/feed/home", b"/feed/home")


async def test_the_query_string_goes_with_the_normalized_path() -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), "/LIST/?page=2")
    assert answer.checked
    assert (upstream.seen[-1]["raw_path"], upstream.seen[-1]["query_string"]) == (b"/list", b"page=2")


async def test_a_route_written_with_a_trailing_slash_is_forwarded_as_written() -> None:
    upstream = Upstream()
    policy = make_policy(routes=[{"path": "/shelf/", "items": "/items"}])
    for target in ("/shelf", "/Shelf/", "/shelf//"):
        answer = await asgi_get(guarded(upstream, policy), target)
        assert answer.checked, target
        assert upstream.seen[-1]["raw_path"] == b"/shelf/"


async def test_non_personalized_rewrite_applies_to_every_spelling() -> None:
    upstream = Upstream()
    # Every purpose denied until the user says yes: Alice gets the non-personalized route.
    purposes = {name: {**purpose, "default": "denied"} for name, purpose in BASE_POLICY["purposes"].items()}
    answer = await asgi_get(guarded(upstream, make_policy(routes=ROUTES, purposes=purposes)), "/Recommendations/")
    assert answer.checked
    assert upstream.seen[-1]["path"] == "/recommendations/popular"
    assert "x-user-id" not in upstream.headers_seen()


@pytest.mark.parametrize("target", AMBIGUOUS)
async def test_an_encoded_slash_that_decides_the_route_is_refused(target: str) -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), target)
    assert refused(answer), answer
    assert upstream.seen == []


async def test_an_encoded_slash_inside_a_guarded_prefix_or_elsewhere_goes_through() -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), "/feed/a%2Fb")
    assert answer.checked
    assert upstream.seen[-1]["raw_path"] == b"/feed/a%2Fb"

    answer = await asgi_get(guarded(upstream), "/files/a%2Fb")
    assert answer.status == 200 and not answer.checked
    assert upstream.seen[-1]["raw_path"] == b"/files/a%2Fb"


async def test_an_unguarded_path_with_dot_segments_is_forwarded_resolved() -> None:
    # The app then sees the path that was matched, whatever its own way of reading dot segments.
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), "/files/x/%2e%2e/readme;v=1")
    assert not answer.checked
    assert (upstream.seen[-1]["path"], upstream.seen[-1]["raw_path"]) == ("/files/readme;v=1", b"/files/readme;v=1")


async def test_case_insensitive_paths_false_matches_case_exactly_but_still_any_trailing_slash() -> None:
    upstream = Upstream()
    middleware = guarded(upstream, make_policy(routes=ROUTES, case_insensitive_paths=False))
    answer = await asgi_get(middleware, "/List")
    assert answer.status == 200 and not answer.checked
    assert upstream.seen[-1]["raw_path"] == b"/List"
    for target in ("/list/", "//list", "/a/../list;x"):
        assert (await asgi_get(middleware, target)).checked, target
    assert (await asgi_get(middleware, "//guardrail/v1/controls")).json()["user"] == "alice"
    await asgi_get(middleware, "/GUARDRAIL/v1/controls")
    assert upstream.seen[-1]["raw_path"] == b"/GUARDRAIL/v1/controls"


@pytest.mark.parametrize("target", API_SPELLINGS)
async def test_spellings_of_the_api_prefix_stay_with_the_guardrail(target: str) -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), target)
    assert upstream.seen == []
    assert answer.status == 200
    assert answer.json()["user"] == "alice"


@pytest.mark.parametrize("target", GPC_SPELLINGS)
async def test_spellings_of_the_gpc_statement_are_served_by_the_guardrail(target: str) -> None:
    upstream = Upstream()
    answer = await asgi_get(guarded(upstream), target)
    assert upstream.seen == []
    assert answer.json()["gpc"] is True


# -- the sidecar ----------------------------------------------------------------------------------

SIDECAR_SPELLINGS = ["/List", "/list/", "//list", "/list;x=1", "/a/../list", "/%2E%2E/list", "/a/..;x/list", "/%6cist"]


async def test_through_the_sidecar_every_spelling_is_checked_and_the_upstream_gets_the_route() -> None:
    async with items_upstream() as upstream, sidecar(upstream.url, routes=ROUTES) as url:
        for target in SIDECAR_SPELLINGS:
            answer = await raw_get(url, target)
            assert answer.checked, target
            assert targets(upstream)[-1] == "/list", target
        for target in ("/x/../feed/home", "/FEED;v=1//home"):
            assert (await raw_get(url, target)).checked, target
            assert targets(upstream)[-1] == "/feed/home", target


async def test_through_the_sidecar_an_ambiguous_path_is_refused_before_the_upstream() -> None:
    async with items_upstream() as upstream, sidecar(upstream.url, routes=ROUTES) as url:
        for target in ("/list%2f", "/list%5C", "/x/..%2flist", "/x/..\\list"):
            assert refused(await raw_get(url, target)), target
        assert targets(upstream) == []


async def test_through_the_sidecar_the_api_and_gpc_spellings_never_reach_the_upstream() -> None:
    async with items_upstream() as upstream, sidecar(upstream.url, routes=ROUTES) as url:
        for target in API_SPELLINGS:
            answer = await raw_get(url, target)
            assert answer.status == 200 and answer.json()["user"] == "alice", target
        for target in GPC_SPELLINGS:
            assert (await raw_get(url, target)).json()["gpc"] is True, target
        assert targets(upstream) == []


async def test_dot_segments_never_climb_out_of_the_upstream_prefix() -> None:
    async with items_upstream() as upstream, sidecar(f"{upstream.url}/api", routes=ROUTES) as url:
        for target in ("/../admin", "/%2e%2e/admin", "/.%2E/admin", "/..;/admin", "/a/../../admin", "/./../admin?x=1"):
            answer = await raw_get(url, target)
            assert answer.status == 200, target
            assert targets(upstream)[-1].partition("?")[0] == "/api/admin", target


async def test_a_dot_segment_behind_an_encoded_slash_is_refused_under_an_upstream_prefix() -> None:
    async with items_upstream() as upstream, sidecar(f"{upstream.url}/api", routes=ROUTES) as url:
        for target in ("/..%2fadmin", "/..%2Fadmin", "/..%5cadmin", "/..\\admin", "/%2e%2e%2fadmin"):
            assert refused(await raw_get(url, target)), target
        assert targets(upstream) == []


async def test_a_guarded_route_under_an_upstream_prefix_is_forwarded_under_it() -> None:
    async with items_upstream() as upstream, sidecar(f"{upstream.url}/api/", routes=ROUTES) as url:
        assert (await raw_get(url, "/LIST/")).checked
        assert targets(upstream)[-1] == "/api/list"


async def test_the_reverse_proxy_on_its_own_keeps_dot_segments_under_its_prefix() -> None:
    # What the sidecar's proxy does whatever is in front of it: the last line before the upstream.
    async with items_upstream() as upstream, serving(ReverseProxy(f"{upstream.url}/api")) as url:
        for target in ("/../admin", "/%2e%2e/admin", "/..;/admin", "/a/../../admin", "/x/.%2E/.%2e/admin"):
            assert (await raw_get(url, target)).status == 200, target
            assert targets(upstream)[-1] == "/api/admin", target
        for target in ("/..%2fadmin", "/..%5Cadmin", "/..\\admin"):
            assert refused(await raw_get(url, target)), target
        assert len(targets(upstream)) == 5


# -- the policy -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/recommendations;v=1", "has a character requests are not matched by"),
        ("/caf%C3%A9", "has a character requests are not matched by"),
        ("/a/../recommendations", "has an empty, . or .. segment"),
        ("//recommendations", "has an empty, . or .. segment"),
        ("/feed/*/top", "has a * before its end"),
        ("recommendations", "does not start with /"),
    ],
)
def test_a_route_path_that_no_request_would_match_is_a_policy_error(path: str, says: str) -> None:
    with pytest.raises(PolicyError) as caught:
        make_policy(routes=[{"path": path}])
    message = dict(caught.value.issues)["routes[0].path"]
    assert says in message and "write the path as servers route it" in message


@pytest.mark.parametrize(
    ("case_insensitive", "second", "twice"),
    [(True, "/List/", True), (True, "/list/", True), (False, "/List", False), (False, "/list/", True)],
)
def test_two_routes_that_match_the_same_requests_are_a_policy_error(
    case_insensitive: bool, second: str, twice: bool
) -> None:
    routes = [{"path": "/list"}, {"path": second}]
    if not twice:
        policy = make_policy(routes=routes, case_insensitive_paths=case_insensitive)
        assert [route.path for route in policy.routes] == ["/list", second]
        return
    with pytest.raises(PolicyError) as caught:
        make_policy(routes=routes, case_insensitive_paths=case_insensitive)
    assert "is guarded twice (as '/list': paths match" in dict(caught.value.issues)["routes[1].path"]


@pytest.mark.parametrize("prefix", ["/guard//rail", "/guard/./rail", "/guard*"])
def test_an_api_prefix_that_no_request_would_match_is_a_policy_error(prefix: str) -> None:
    with pytest.raises(PolicyError) as caught:
        make_policy(prefix=prefix)
    assert "write the prefix as servers route it" in dict(caught.value.issues)["prefix"]


def test_case_insensitive_paths_is_a_boolean_true_by_default() -> None:
    assert make_policy().case_insensitive_paths is True
    assert Policy.model_json_schema()["properties"]["case_insensitive_paths"] == {
        "default": True,
        "title": "Case Insensitive Paths",
        "type": "boolean",
    }
    with pytest.raises(PolicyError) as caught:
        make_policy(case_insensitive_paths="sometimes")
    assert "case_insensitive_paths" in dict(caught.value.issues)
