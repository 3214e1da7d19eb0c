# The guardrail's item rules (docs/architecture.md §3) as a policy-engine user would write them in Rego: the
# benchmark's "policy engine" arm evaluates `decisions` once per request, for the whole item list.
#
# Covered: consent per purpose (stored, else the purpose's default), personalization off, signals
# turned off, muted topics (a category and everything under it; a snooze ends by itself),
# sensitive categories that need an opt-in, the invasiveness score with its discreet and hide
# thresholds, and the explanation of each kept item. Not covered (the benchmark's requests carry
# none of it): GPC, TC strings, minors, fail modes.
#
# input: {"now": <epoch seconds>, "user": <state, peers/policy_data.py>, "items": <the items, only the fields read here>}
# data.policy: the policy file boiled down to plain data (peers/policy_data.py)
package guardrail.bench

import rego.v1

# Lookups with a key known only at evaluation time go through object.get: rego-cpp unifies
# `obj[key]` against every key of the object, which costs ~100x more here.

policy := data.policy

decisions := [decision(item) | some item in input.items]

# -- once per request: what this user allows ----------------------------------------------------

active_mutes contains topic if {
	some topic, until in input.user.muted
	mute_active(until)
}

mute_active(until) if until == null

mute_active(until) if until > input.now

opt_ins contains topic if {
	some topic, on in input.user.sensitive
	on == true
}

# Why each signal of the policy may not be used (empty: it may).
signal_reasons[name] := no_consent | (off | signal_off) if {
	some name, info in policy.signals
	no_consent := {"no_consent" | not consented(info.purpose)}
	off := {"personalization_off" | input.user.personalization == false}
	signal_off := {"signal_off" | object.get(input.user.signals, name, true) == false}
}

consented(purpose) if {
	default_consent := object.get(policy.purposes, purpose, {"default": "denied"}).default
	object.get(input.user.consent, purpose, default_consent) == "granted"
}

# -- per item -------------------------------------------------------------------------------------

decision(item) := {"action": action, "reasons": reasons, "explanation": explanation(action, signals, inferred)} if {
	signals := signals_of(item)
	categories := object.get(item, "categories", [])
	sensitive := [c | some c in categories; is_sensitive(c)]
	inferred := object.get(item, "inferred", false)
	score := score_of(signals, sensitive, is_fresh(item), inferred)
	muted := {"topic_muted" | some c in categories; some topic in active_mutes; under(c, topic)}
	reasons := sort(muted | personal_reasons(signals, sensitive, score))
	action := action_of(reasons, sensitive, score)
}

signals_of(item) := s if {
	s := object.get(item, "signals", null)
	s != null
} else := policy.default_signals

# `health.pregnancy` is under `health`: a rule on either applies to it.
under(category, topic) if category == topic

under(category, topic) if startswith(category, concat("", [topic, "."]))

# The policy's own categories are resolved up front (policy_data.py); one it does not name takes
# what its closest named ancestor says.
is_sensitive(category) := known if {
	known := object.get(policy.sensitive, category, null)
	known != null
} else := marked[0] if {
	parts := split(category, ".")
	marked := [m |
		some n in numbers.range(count(parts) - 1, 1)
		m := object.get(policy.sensitive, concat(".", array.slice(parts, 0, n)), null)
		m != null
	]
	count(marked) > 0
} else := false

is_fresh(item) := age < policy.fresh_seconds if {
	age := object.get(item, "signal_age_seconds", null)
	age != null
} else := false

opted_in(category) if {
	some topic in opt_ins
	under(category, topic)
}

personal_reasons(signals, sensitive, score) := set() if {
	count(signals) == 0
} else := (consent | needs_opt_in) | invasive if {
	# A signal the policy does not know has no purpose anyone could have consented to.
	consent := union({object.get(signal_reasons, s, {"no_consent"}) | some s in signals})
	needs_opt_in := {"sensitive_needs_opt_in" | some c in sensitive; not opted_in(c)}
	invasive := {"too_invasive" | score >= policy.hide_at}
}

score_of(signals, sensitive, fresh, inferred) := 0 if {
	count(signals) == 0
} else := capped(sum(parts), 100) if {
	known := [info | some s in signals; info := object.get(policy.signals, s, null); info != null]
	w := policy.weights
	third_party := count([k | some k in known; k.third_party]) > 0

	# Named parts and sum(): rego-cpp 1.5 mis-evaluates a long chain of `+` over function calls.
	parts := [
		bonus(count(sensitive) > 0, w.sensitive_category),
		w.signal_sensitivity * top_sensitivity(known),
		bonus(fresh, w.fresh_activity),
		bonus(inferred, w.inferred),
		bonus(third_party, w.third_party),
	]
}

# Not min(): rego-cpp 1.5's min and max (and sort) order numbers like strings (min([100, 30]) is 100).
capped(total, cap) := cap if {
	total > cap
} else := total

bonus(on, weight) := weight if {
	on == true
} else := 0

# A signal the policy does not know counts as the most sensitive. (max() is safe here despite the
# string-like ordering: sensitivities are single digits, 0 to 3.)
top_sensitivity(known) := max([k.sensitivity | some k in known]) if {
	count(known) > 0
} else := 3

action_of(reasons, sensitive, score) := "hide" if {
	count(reasons) > 0
} else := "discreet" if {
	count(sensitive) > 0
} else := "discreet" if {
	score >= policy.discreet_at
} else := "keep"

explanation(action, signals, inferred) := null if {
	action == "hide"
} else := {"text": policy.texts["item.popular"], "because": [], "controls": policy.controls} if {
	count(signals) == 0
} else := {"text": policy.texts["item.discreet"], "because": [], "controls": policy.controls} if {
	action == "discreet"
} else := {"text": replace(template(inferred), "{signals}", labels), "because": because, "controls": policy.controls} if {
	because := [s | s := signals[i]; not s in array.slice(signals, 0, i)]
	labels := concat(policy.texts["list.and"], [object.get(policy.signals, s, {}).label | some s in because])
}

template(inferred) := policy.texts["item.inferred"] if {
	inferred == true
} else := policy.texts["item.because"]
