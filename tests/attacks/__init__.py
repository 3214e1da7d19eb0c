"""Attacks on the guardrail's boundaries (docs/security.md): each test is an attack a client, an upstream
or a store could make, against the real sidecar (`guardrail serve`) and the middleware where it applies.
A hole found once becomes a class of tests here."""
