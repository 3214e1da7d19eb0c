"""The guardrail's item rules as a Rego policy (`guardrail.rego`), evaluated by regopy (rego-cpp).

A pure-ASGI middleware like the orjson round trip arm (it is one, with a policy query in the
middle): buffer the body, parse it with orjson, look the user's controls up in process (as the
guardrail's warm memory store does), evaluate `data.guardrail.bench.decisions` once for the whole
item list, attach the explanations the policy wrote, serialize.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import regopy  # type: ignore[import-untyped]
from apps import OrjsonRoundTrip

from guardrail.policy.models import Policy
from peers.policy_data import policy_data, user_data

POLICY_FILE = Path(__file__).resolve().parent / "guardrail.rego"
QUERY = "decisions := data.guardrail.bench.decisions"
# What the policy reads of an item: sending only these keeps rego-cpp's input parsing short.
ITEM_FIELDS = ("categories", "signals", "signal_age_seconds", "inferred")


class RegoError(RuntimeError):
    """The policy did not load or did not evaluate; the message is rego-cpp's."""


class RegoPolicy:
    """`guardrail.rego` compiled once into a bundle, queried once per request."""

    def __init__(self, policy: Policy) -> None:
        self.rego = regopy.Interpreter()
        self.rego.add_data({"policy": policy_data(policy)})
        self.rego.add_module("guardrail", POLICY_FILE.read_text())
        self.bundle = self.rego.build(QUERY)
        if not self.bundle.ok():
            raise RegoError(f"{POLICY_FILE} does not compile: {self.bundle.node()}")

    def decide(self, user_json: bytes, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One decision per item, in order: {"action", "reasons", "explanation"}."""
        slim = [{key: item[key] for key in ITEM_FIELDS if key in item} for item in items]
        term = b'{"now":%f,"user":%b,"items":%b}' % (time.time(), user_json, orjson.dumps(slim))
        self.rego.set_input_term(term.decode())
        output = self.rego.query_bundle(self.bundle)
        if not output.ok():
            raise RegoError(str(output))
        decisions: list[dict[str, Any]] = output[0]["decisions"]
        if len(decisions) != len(items):
            raise RegoError(f"{len(decisions)} decisions for {len(items)} items: a rule is undefined for some item")
        return decisions


class RegoGuard(OrjsonRoundTrip):
    def __init__(self, app: Any, policy: Policy, controls: dict[str, dict[str, Any]]) -> None:
        super().__init__(app)
        self.policy = RegoPolicy(policy)
        self.users = {user: orjson.dumps(user_data(state)) for user, state in controls.items()}
        self.no_controls = orjson.dumps(user_data({}))

    def rewrite(self, body: bytes, scope: Any) -> bytes:
        user = next((value.decode() for name, value in scope["headers"] if name == b"x-user-id"), None)
        document = orjson.loads(body)
        items = document["items"]
        decisions = self.policy.decide(self.users.get(user, self.no_controls) if user else self.no_controls, items)
        kept = []
        # As the guardrail does: each kept item links to its own "why?" page.
        why = f"/guardrail/why/{secrets.token_hex(6)}/" if user else None
        for item, decision in zip(items, decisions, strict=True):
            if decision["action"] != "hide":
                explanation = decision["explanation"]
                if why is not None:
                    explanation = {**explanation, "why": why + quote(str(item["id"]), safe="")}
                item["explanation"] = explanation
                kept.append(item)
        hidden = len(items) - len(kept)
        document["items"] = kept
        document["guardrail"] = {
            "kept": len(kept),
            "hidden": hidden,
            "notice": f"We hid {hidden} suggestions." if hidden else None,
        }
        return orjson.dumps(document)
