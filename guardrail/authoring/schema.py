"""`guardrail schema`: the JSON Schema of a policy file, from the models that validate it.

Editors validate and complete a policy with it (the yaml-language-server comment at the top of the example
policies points at `config/guardrail.schema.json`, this output). `guardrail check` stays the authority:
cross-references (a signal's purpose exists, routes do not overlap) are beyond a schema.
"""

from __future__ import annotations

import json
from typing import Any

from guardrail.policy.models import Policy

SCHEMA_ID = (
    "https://github.com/personalization-guardrail/personalization-guardrail/blob/main/config/guardrail.schema.json"
)


def policy_schema() -> dict[str, Any]:
    schema = Policy.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "guardrail policy",
        "description": "A guardrail policy file (docs/integrate.md, The policy file). Check it with `guardrail check`.",
        **{key: value for key, value in schema.items() if key != "title"},
    }


def schema_text() -> str:
    return json.dumps(policy_schema(), indent=2, ensure_ascii=False) + "\n"
