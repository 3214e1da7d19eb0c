"""Where the Redis store keeps a user's state (docs/architecture.md §6).

One user's keys share the hash tag `{u:<user>}`, so every user operation is single-slot and works the
same on Redis Cluster:

    gr:{u:<user>}     hash: the user's controls (see codec.py for the fields)
    gr:{u:<user>}:d   list: the user's decision records, newest first, capped and expiring
    gr:{u:<user>}:e   string: when the user last erased their data (epoch seconds), kept as long as
                      a record: a record made before then, written later, is refused
    gr:{u:<user>}:r   hash: the user's reports, one field per reported item of a decision, expiring
                      with the decision records

Every change publishes the user on `CHANNEL`, and every replica drops that user from its cache.
"""

from __future__ import annotations

CHANNEL = "gr:invalidate"


def controls_key(user: str) -> str:
    # Braces inside a user id would move the hash tag: escape them (and the escape character).
    tag = user.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"gr:{{u:{tag}}}"


def records_key(user: str) -> str:
    return controls_key(user) + ":d"


def erased_key(user: str) -> str:
    """When the user last erased their data: records made before then are not written (erase.lua)."""
    return controls_key(user) + ":e"


def reports_key(user: str) -> str:
    return controls_key(user) + ":r"


# The review queue (docs/review.md) shares one hash tag, so each of its scripts is single-slot:
#   gr:{review}:q       hash: entry id -> the entry (JSON)
#   gr:{review}:rank    zset: entry id -> count + last_seen / 1e10 (the first is dropped when full)
#   gr:{review}:age     zset: entry id -> first seen (the first has waited longest)
#   gr:{review}:overlay hash: entry id -> the decision in force (JSON)
#   gr:{review}:audit   list: every decision (JSON), oldest first; only ever appended to
#   gr:{review}:n       hash: kind -> entries waiting; "dropped" -> entries dropped
REVIEW_KEYS = {name: f"gr:{{review}}:{name}" for name in ("q", "rank", "age", "overlay", "audit", "n")}
# Published on CHANNEL when the overlay changes: not a user id, since ids with control characters are refused.
REVIEW_MESSAGE = "\x00review"
