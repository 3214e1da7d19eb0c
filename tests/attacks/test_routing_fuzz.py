"""A differential fuzz of routing (docs/architecture.md §7 "Complete mediation"): request paths spelled every which way,
sent to upstream stand-ins that route as real frameworks do, through the middleware and the real sidecar.

The invariant: every 2xx body from a guarded handler that reaches the client was checked; the rest is a
refusal (400, problem+json) or the stand-in's 404. Each stand-in answers 200 with items only from its
guarded handlers, so a 200 that was not checked is a guarded handler's answer let through.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from urllib.parse import quote, unquote, unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.types import Receive, Scope, Send

from guardrail import GuardrailMiddleware
from guardrail.sidecar import build_sidecar
from tests.attacks.support_paths import ITEMS_BODY, Answer, Background, WithoutSighup, asgi_get, blocking_get
from tests.conftest import make_policy
from tests.sidecar.servers import write_policy
from tests.strategies import examples
from tests.upstream import answer_lifespan

ROUTES = [{"path": "/recommendations"}, {"path": "/list"}, {"path": "/feed/*"}]
POLICY = make_policy(routes=ROUTES)

# -- how frameworks route -------------------------------------------------------------------------
# Each takes the ASGI scope the stand-in got and says whether a guarded handler answers it.


def _guarded(path: str) -> bool:
    return path in ("/recommendations", "/list") or path.startswith("/feed/") or path == "/feed"


def _resolve_dots(segments: list[str]) -> list[str]:
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    return out


def case_insensitive(scope: Scope) -> bool:
    """Spring's or ASP.NET's case-insensitive matching: character by character, upper then lower case."""
    return _guarded("".join(character.upper().lower() for character in scope["path"]))


def trailing_slash_tolerant(scope: Scope) -> bool:
    """Flask's `strict_slashes=False`, Express's default: `/list/` is `/list`."""
    path: str = scope["path"]
    return _guarded(path[:-1] if path.endswith("/") and len(path) > 1 else path)


def servlet(scope: Scope) -> bool:
    """A Java servlet container: `;` parameters stripped from each raw segment, then decoded, repeated
    slashes merged, dot segments resolved."""
    raw: bytes = scope["raw_path"]
    names = [unquote(segment.partition(";")[0]) for segment in raw.decode("latin-1").split("/")[1:]]
    return _guarded("/" + "/".join(_resolve_dots([name for name in names if name])))


def decodes_slashes(scope: Scope) -> bool:
    """A framework that routes on the decoded path, `%2F` a `/` like any other, `\\` too (as on Windows),
    and normalizes it (dot segments, repeated slashes) first."""
    path = scope["path"].replace("\\", "/")
    return _guarded("/" + "/".join(_resolve_dots([name for name in path.split("/") if name])))


def lenient(scope: Scope) -> bool:
    """All of the above at once: what the guardrail must assume."""
    raw: bytes = scope["raw_path"]
    names = [unquote(segment.partition(";")[0]) for segment in re.split(r"/|%2[fF]|%5[cC]|\\", raw.decode("latin-1"))]
    path = "/" + "/".join(_resolve_dots([name for name in names[1:] if name]))
    return case_insensitive({"path": path}) or trailing_slash_tolerant({"path": path})


STAND_INS: dict[str, Callable[[Scope], bool]] = {
    "case-insensitive": case_insensitive,
    "trailing-slash": trailing_slash_tolerant,
    "servlet": servlet,
    "decodes-slashes": decodes_slashes,
    "lenient": lenient,
}


class StandIn:
    """An upstream that routes like `routes`: 200 with items from a guarded handler, 404 otherwise."""

    def __init__(self, routes: Callable[[Scope], bool]) -> None:
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        found = self.routes(scope)
        body = ITEMS_BODY if found else b"not found"
        kind = b"application/json" if found else b"text/plain"
        headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200 if found else 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# -- paths ----------------------------------------------------------------------------------------

# Letters some servers fold to ASCII ones: dotless i and long s upper-case to I and S, the Kelvin sign
# lower-cases to k; fullwidth letters are their ASCII ones after NFKC.
LOOK_ALIKES = {"i": ["\u0131", "\uff49"], "s": ["\u017f", "\uff53"], "k": ["\u212a"], "l": ["\uff4c"]}


@st.composite
def spelled(draw: st.DrawFn, word: str) -> str:
    out = []
    for character in word:
        how = draw(st.sampled_from(["same", "same", "same", "upper", "encoded", "look-alike"]))
        if how == "upper":
            out.append(character.upper())
        elif how == "encoded":
            out.append(f"%{ord(character):02{draw(st.sampled_from(['x', 'X']))}}")
        elif how == "look-alike" and character in LOOK_ALIKES:
            out.append(draw(st.sampled_from(LOOK_ALIKES[character])))
        else:
            out.append(character)
    return "".join(out)


ROUTE_WORDS = st.sampled_from(["list", "recommendations", "feed"])
WORDS = st.sampled_from(["list", "recommendations", "feed", "home", "x", "guardrail", "api"])
PARAMS = st.sampled_from(["", "", "", ";", ";x=1", ";jsessionid=A1"])
DOTS = st.sampled_from([".", "..", "%2e", "%2E%2e", ".%2E", "..;x", "%2e%2e%2f", "..%2f", "..\\"])
SEPARATORS = st.sampled_from(["/", "/", "/", "/", "//", "%2f", "%2F", "%5c", "\\"])
SEGMENTS = st.one_of(
    st.tuples(WORDS.flatmap(spelled), PARAMS).map("".join),
    DOTS,
    st.just(""),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=3),
)


@st.composite
def request_paths(draw: st.DrawFn) -> str:
    """A raw request target: a route's name, spelled some way, among other segments joined by separators;
    what is not printable ASCII percent-encoded."""
    route = draw(st.tuples(ROUTE_WORDS.flatmap(spelled), PARAMS).map("".join))
    segments = [*draw(st.lists(SEGMENTS, max_size=3)), route, *draw(st.lists(SEGMENTS, max_size=2))]
    path = "".join(draw(SEPARATORS) + segment for segment in segments)
    if draw(st.booleans()):
        path += "/"
    return quote(path if path.startswith("/") else "/" + path, safe="/%;=\\:@!$&'()*+,~")


def stand_in_routes(routes: Callable[[Scope], bool], target: str) -> bool:
    """Whether the stand-in, asked for `target` as the client sent it, would answer from a guarded handler."""
    decoded = unquote_to_bytes(target).decode("utf-8", "replace")
    return routes({"path": decoded, "raw_path": target.encode("ascii")})


def holds(answer: Answer, target: str) -> None:
    """Refused with a problem, a stand-in's 404, or an answer of a guarded handler that was checked."""
    if answer.status == 400:
        assert answer.headers["content-type"] == "application/problem+json", target
    else:
        assert answer.status in (200, 404), (target, answer)
        assert answer.status == 404 or answer.checked, (target, answer)


# -- the middleware -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(STAND_INS))
@examples(250)
@given(target=request_paths())
async def test_in_process_every_path_a_stand_in_guards_is_checked(name: str, target: str) -> None:
    routes = STAND_INS[name]
    middleware = GuardrailMiddleware(StandIn(routes), policy=POLICY, registry=CollectorRegistry())
    answer = await asgi_get(middleware, target)
    holds(answer, target)


@pytest.mark.parametrize("name", sorted(STAND_INS))
async def test_the_plain_spellings_of_the_routes_reach_the_guarded_handler_checked(name: str) -> None:
    # The other side: what the guardrail matches, every stand-in serves, checked (nothing over-refused).
    middleware = GuardrailMiddleware(StandIn(STAND_INS[name]), policy=POLICY, registry=CollectorRegistry())
    for path in ("/list", "/recommendations", "/feed/home", "/LIST/", "/x/../feed//home", "/feed/a%2Fb"):
        assert (await asgi_get(middleware, path)).checked, path


# -- the real sidecar -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecars() -> Iterator[dict[str, str]]:
    """For each stand-in: the sidecar in front of it (both served in a thread of their own); its URL."""
    with Background() as background:
        urls = {}
        for name, routes in STAND_INS.items():
            upstream = background.serve(StandIn(routes))
            policy = write_policy(background.directory / f"{name}.yaml", routes=ROUTES)
            app = build_sidecar(policy, upstream, store="memory://", registry=CollectorRegistry())
            urls[name] = background.serve(WithoutSighup(app))
        yield urls


@pytest.mark.parametrize("name", sorted(STAND_INS))
@examples(40)
@given(target=request_paths())
def test_through_the_sidecar_every_path_a_stand_in_guards_is_checked(
    sidecars: dict[str, str], name: str, target: str
) -> None:
    answer = blocking_get(sidecars[name], target)
    holds(answer, target)


def test_the_stand_ins_route_what_they_say() -> None:
    # The stand-ins themselves, so that a broken one cannot make the fuzz pass.
    routed = {
        "case-insensitive": ("/LIST", "/li%C5%BFt", "/FEED/x"),
        "trailing-slash": ("/list/", "/feed/x/"),
        "servlet": ("/a/..;x/list;y", "//feed;v=1//home", "/%2e%2e/list"),
        "decodes-slashes": ("/x/..%2flist", "/list%2F", "/x/..%5Clist"),
        "lenient": ("/X/..%5cLIST/", "/f%65ed;a"),
    }
    for name, paths in routed.items():
        for path in paths:
            assert stand_in_routes(STAND_INS[name], path), (name, path)
        assert not stand_in_routes(STAND_INS[name], "/other"), name
    assert not stand_in_routes(servlet, "/LIST")
    assert not stand_in_routes(case_insensitive, "/list/")
    assert not stand_in_routes(trailing_slash_tolerant, "/list;x")
