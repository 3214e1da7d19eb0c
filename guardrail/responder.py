"""One guarded response: buffer the upstream's JSON, decide each item, annotate, send.

A throwaway object per request (like Starlette's `GZipResponder`): it reports what it decided to the
runtime (`guardrail.runtime`) and knows nothing of the middleware that made it. Errors, redirects and
answers without content (204, 205, 304, HEAD) pass through unbuffered; a success that is not whole JSON
(another type, a 206) is unchecked and follows the fail mode.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.types import Message, Send

from guardrail.bodies import BadBody, decode_body, encode_body, read_json, storable_ids, write_json
from guardrail.callers import Caller
from guardrail.echo import inert
from guardrail.engine import BadItem, CheckedItems, UserContext
from guardrail.guard import Guard
from guardrail.pointer import PointerError, resolve
from guardrail.representation import enforced_headers, is_json, private_headers
from guardrail.routes import GuardedRoute
from guardrail.runtime import Runtime
from guardrail.sampling import Asked
from guardrail.store import DecisionRecord
from guardrail.summary import decision_headers, decision_record, outcome, summary
from guardrail.web.problem import PROBLEM_JSON
from guardrail.why_links import attach_why, fill_links, why_base

# Set on the `http.response.start` of an answer the sidecar's proxy made itself because the upstream
# could not be reached (its value: the kind, as in guardrail_upstream_errors_total). Servers ignore it.
UPSTREAM_ERROR = "guardrail.upstream_error"
# Set on the `http.response.start` of a page the app checked in process (`guardrail.inprocess`): its
# value says what was decided (`.summary`, `.overhead`). The page passes as it is, counted once.
CHECKED_IN_PROCESS = "guardrail.checked"
# Successes without content: nothing in them to check (RFC 9110 §15.3.5, §15.3.6).
_NO_CONTENT = frozenset({204, 205})
# Successes with part of the page, or a delta of it (RFC 3229): no list of items to check.
_PARTIAL = frozenset({206, 226})


class GuardedResponder:
    __slots__ = (
        "asked",
        "caller",
        "chunks",
        "ctx",
        "decision_id",
        "default_signals",
        "encoding",
        "guard",
        "hidden_count",
        "mode",
        "outcome",
        "overhead",
        "route",
        "runtime",
        "send",
        "size",
        "start",
        "state",
    )

    def __init__(
        self,
        runtime: Runtime,
        guard: Guard,
        route: GuardedRoute,
        ctx: UserContext,
        caller: Caller,
        send: Send,
        *,
        rewritten: bool,
        head: bool,
        asked: Asked | None = None,
    ) -> None:
        self.runtime = runtime
        self.guard = guard
        self.route = route
        self.ctx = ctx
        self.caller = caller
        self.send = send
        self.mode = guard.policy.mode
        # A rewritten request went to the non-personalized route without identity:
        # items that do not say otherwise relied on no personal data.
        self.default_signals = () if rewritten else route.default_signals
        # What the page was decided on, for a candidate policy or a recorded case (`guardrail.sampling`).
        # Not for a rewritten request: its body is the non-personalized route's, decided without signals.
        self.asked = None if rewritten else asked
        self.decision_id = runtime.next_decision_id()
        self.start: Message | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.encoding = b""
        self.state = "head" if head else "waiting"
        self.outcome = "passthrough"
        self.overhead = 0.0
        self.hidden_count = 0

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if self.state == "passthrough":
            await self.send(message)
        elif self.state == "head":
            await self._on_head(message)
        elif kind == "http.response.start":
            await self._on_start(message)
        elif kind == "http.response.body":
            if self.state == "buffering":
                await self._on_body(message)
            elif self.state == "streaming":  # over max_body_bytes in open or shadow mode
                await self.send(message)
            # "discarding": a 502 has been sent; the rest of the upstream body is dropped.

    async def _on_start(self, message: Message) -> None:
        checked = message.get(CHECKED_IN_PROCESS)
        if checked is not None:
            self._checked_in_process(checked)
            await self.send(message)
            return
        status = message["status"]
        content_type = b""
        for name, value in message.get("headers", ()):
            if name == b"content-type":
                content_type = value
            elif name == b"content-encoding":
                self.encoding = value.strip().lower()
        if not 200 <= status < 300 or status in _NO_CONTENT:
            # Errors, redirects and answers without content are the upstream's to explain: untouched, but counted.
            self.state = "passthrough"
            if UPSTREAM_ERROR in message:
                self.outcome = "upstream_error"  # no upstream answer at all: the proxy's 502 or 504
            else:
                kind = "no_content" if status in _NO_CONTENT else "error_status" if status >= 400 else "other_status"
                self.runtime.count_upstream_body(kind)
            await self.send(message)
            return
        self.start = message
        if status in _PARTIAL:
            await self._unchecked("partial", f"the upstream answered {status}, not the whole page", more=True)
        elif not is_json(content_type):
            shown = f"Content-Type {content_type.decode('latin-1')!r}" if content_type else "no Content-Type"
            await self._unchecked("non_json", f"the body has {shown}, not JSON", more=True)
        else:
            self.state = "buffering"

    def _checked_in_process(self, checked: Any) -> None:
        """The app checked its items in process and has counted them: this request reports its decision."""
        self.state = "passthrough"
        found = checked.summary
        self.decision_id = found["decision"]
        self.hidden_count = found["hidden"]
        self.outcome = outcome(found["mode"], found["degraded"])
        self.overhead += checked.overhead

    async def _on_head(self, message: Message) -> None:
        """A HEAD has no body to check; in enforce mode its headers say, as the GET's would, that
        the page is for one user (a HEAD answer may refresh a stored GET answer, RFC 9111 §4.3.5)."""
        if message["type"] == "http.response.start" and self.mode == "enforce" and 200 <= message["status"] < 300:
            message = {**message, "headers": private_headers(message.get("headers", ()))}
        self.state = "passthrough"
        await self.send(message)

    async def _on_body(self, message: Message) -> None:
        body = message.get("body", b"")
        if body:
            self.chunks.append(body)
            self.size += len(body)
        limit = self.guard.policy.max_body_bytes
        if self.size > limit:
            # Open or shadow: what came so far goes out, the rest streams through as it comes.
            await self._unchecked("too_large", f"the body is over max_body_bytes ({limit})", more=True)
        elif not message.get("more_body", False):
            await self._finish()

    async def _finish(self) -> None:
        # The overhead timer stops before each send: handing the body to the server, and
        # waiting on a slow client, is not time the guardrail adds.
        started = time.perf_counter()
        raw = b"".join(self.chunks)
        limit = self.guard.policy.max_body_bytes
        try:
            decoded = decode_body(raw, self.encoding, limit)
            document, exact = read_json(decoded)
            try:
                container, key, items = resolve(document, self.route.pointer)
            except PointerError as exc:
                raise BadBody("no_list", f"nothing at the items pointer: {exc}") from None
            if type(items) is not list:
                raise BadBody("no_list", f"the items pointer names a {type(items).__name__}, not a list")
            enforce = self.mode == "enforce"
            # Each kept item links to its "why?" page: only an identified caller has a receipt for it to read.
            prefix = self.guard.prefix
            linked = enforce and self.caller.user is not None and bool(prefix)
            base = why_base(prefix or "", self.decision_id) if linked else ""
            fields = self.route.fields
            try:
                checked = self.guard.check(
                    self.ctx, fields, items, self.default_signals, annotate=enforce, linked=linked and not exact
                )
            except BadItem as exc:
                raise BadBody("bad_item", str(exc)) from None
            if exact:
                checked = checked._replace(item_ids=storable_ids(checked.item_ids))
                if linked:  # the stdlib writes this page: the links go in item by item
                    attach_why(items, checked.decisions, fields.id, base)
            hidden = checked.hidden
            summary_notice = (
                self.guard.notice.by_kind(self.ctx.locale, checked.hidden_by_kind, self.ctx.paused_until)
                if hidden
                else None
            )
            # Shadow mode sends the body as it came, byte for byte.
            if enforce:
                written = self._rewritten(document, container, key, checked, summary_notice, exact)
                if linked and not exact:
                    written = fill_links(written, checked.kept, fields.id, base)
                out = encode_body(written, self.encoding)
            else:
                out = raw
        except BadBody as exc:
            self.overhead += time.perf_counter() - started
            await self._unchecked(exc.kind, exc.detail, more=False)
            return
        self.hidden_count = len(hidden)
        headers = self._headers(len(hidden))
        self.outcome = outcome(self.mode, self.ctx.degraded)
        if self.ctx.degraded:
            self.runtime.count_fail_mode(self.guard.policy.fail_mode)
        assert self.start is not None  # _on_start stored it before any body
        upstream_headers = self.start.get("headers", ())
        # Shadow mode sends the upstream's own bytes: all it says about them stays true.
        kept = (
            enforced_headers(upstream_headers)
            if enforce
            else [h for h in upstream_headers if h[0] != b"content-length"]
        )
        start = {**self.start, "headers": [*kept, (b"content-length", str(len(out)).encode()), *headers]}
        self.overhead += time.perf_counter() - started
        await self.send(start)
        await self.send({"type": "http.response.body", "body": out})
        started = time.perf_counter()
        runtime = self.runtime
        runtime.after_decision(self.route.template, checked, self.record(checked, items))
        runtime.note_for_review(self.guard.for_review(self.route.template, self.route.fields, items, checked))
        sampler = runtime.sampler
        if sampler is not None and self.asked is not None:
            sampler.offer(self.route.template, decoded, checked.decisions, self.caller.user, self.asked)
        self.overhead += time.perf_counter() - started

    def _rewritten(
        self,
        document: Any,
        container: Any,
        key: Any,
        checked: CheckedItems,
        summary_notice: str | None,
        exact: bool,
    ) -> bytes:
        """The document with only the kept items, and the summary if it is an object."""
        kept = checked.kept
        if container is None:
            document = kept
        else:
            container[key] = kept
        if type(document) is dict:
            document["guardrail"] = summary(
                self.decision_id,
                self.mode,
                self.guard.policy.policy_id,
                len(kept),
                len(checked.hidden),
                self.ctx.degraded,
                summary_notice,
            )
        return write_json(document, exact=exact)

    def _headers(self, hidden: int, *, degraded: bool | None = None) -> list[tuple[bytes, bytes]]:
        return decision_headers(
            self.decision_id, self.mode, hidden, self.ctx.degraded if degraded is None else degraded
        )

    async def _unchecked(self, kind: str, detail: str, *, more: bool) -> None:
        """A body we cannot check. Closed: 502 with nothing of it. Open (or shadow): as it came, marked.
        `more`: the rest of the upstream's body is still to come (it then streams through, or is dropped)."""
        runtime = self.runtime
        runtime.count_upstream_body(kind)
        assert self.start is not None
        if self.mode == "shadow" or self.guard.policy.fail_mode == "open":
            self.outcome = "degraded"
            runtime.count_fail_mode("open")
            runtime.log_unchecked(self.route.template, self.decision_id, kind, detail, "passed through unchecked")
            upstream_headers = self.start.get("headers", ())
            if self.mode == "enforce":
                # Unchecked, it must not be kept and shown again once it could have been checked.
                upstream_headers = private_headers(upstream_headers)
            await self.send({**self.start, "headers": [*upstream_headers, *self._headers(0, degraded=True)]})
            if self.chunks or not more:  # before any body has come, there is nothing to send yet
                await self.send({"type": "http.response.body", "body": b"".join(self.chunks), "more_body": more})
            self.chunks = []
            self.state = "streaming" if more else "done"
            return
        self.outcome = "upstream_error"
        runtime.count_fail_mode("closed")
        runtime.log_unchecked(self.route.template, self.decision_id, kind, detail, "replaced by a 502")
        self.state = "discarding"
        self.chunks = []
        body = orjson.dumps(
            {
                "type": "about:blank",
                "title": "Bad Gateway",
                "status": 502,
                "detail": (
                    # The detail may quote the upstream (a Content-Encoding): inert, like every problem detail.
                    f"The recommendation service sent a response the guardrail could not check: {inert(detail)}. "
                    "Nothing of it was shown (fail_mode: closed)."
                ),
                "decision": self.decision_id,
            }
        )
        await self.send(
            {
                "type": "http.response.start",
                "status": 502,
                "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *self._headers(0, degraded=True),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    def record(self, checked: CheckedItems, items: list[Any]) -> DecisionRecord | None:
        return decision_record(
            self.decision_id,
            self.caller.user,
            self.route.template,
            self.mode,
            self.guard.policy.policy_id,
            self.ctx,
            checked,
            items,
            self.route.fields,
        )
