"""Consent signals carried by requests: IAB TCF v2 TC strings (`guardrail.consent.tcf`)."""
