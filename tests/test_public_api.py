"""The public surface is curated: what `import guardrail` offers is a promise."""

from __future__ import annotations

import guardrail


def test_all_is_exactly_the_public_surface() -> None:
    assert sorted(guardrail.__all__) == sorted(
        [
            "Action",
            "Checked",
            "ControlsError",
            "GuardedJSONResponse",
            "Guardrail",
            "GuardrailError",
            "GuardrailContext",
            "GuardrailMiddleware",
            "InProcess",
            "InvalidControls",
            "MemoryStore",
            "MissingExtra",
            "Policy",
            "PolicyError",
            "PolicyReloader",
            "Reason",
            "StaleRevision",
            "Store",
            "StoreError",
            "UserState",
            "create_store",
            "install",
            "load_policy",
            "parse_guardrail_context",
            "parse_policy",
        ]
    )
    for name in guardrail.__all__:
        assert getattr(guardrail, name) is not None


def test_reason_codes_are_the_documented_closed_set() -> None:
    assert {reason.value for reason in guardrail.Reason} == {
        "no_consent",
        "personalization_off",
        "signal_off",
        "topic_muted",
        "sensitive_needs_opt_in",
        "too_invasive",
        "minor_protection",
        "gpc_opt_out",
        "tcf_no_consent",
        "store_unavailable",
        "unknown_category",
        "blocked_by_review",
    }
    assert [action.value for action in guardrail.Action] == ["keep", "discreet", "hide"]


def test_memory_store_follows_the_store_protocol() -> None:
    assert isinstance(guardrail.MemoryStore(), guardrail.Store)
    assert isinstance(guardrail.create_store("memory://"), guardrail.MemoryStore)


def test_install_is_the_function_whatever_was_imported_first() -> None:
    # The handle's module is imported by `guardrail.Guardrail`; the package's `install` stays the function.
    from guardrail.embed import Guardrail

    assert guardrail.Guardrail is Guardrail
    assert callable(guardrail.install)
    assert guardrail.install.__module__ == "guardrail.embed"
