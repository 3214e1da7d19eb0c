"""A caller, as every identity source gives it: a user id taken exactly as sent, and an age if known."""

from __future__ import annotations

from dataclasses import dataclass

MAX_USER_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Caller:
    user: str | None = None
    age: int | None = None
    # The roles a verified token gives (the policy's `review.role_claim`); empty for every other source.
    roles: frozenset[str] = frozenset()


ANONYMOUS = Caller()


def exact_user_id(raw: bytes | None) -> str | None:
    """The id as sent, or None when it cannot be one (see `exact_user_str`)."""
    if not raw or len(raw) > 4 * MAX_USER_ID_LENGTH:
        return None
    try:
        user = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return exact_user_str(user)


def exact_user_str(user: str) -> str | None:
    """The id as given, or None when it cannot be one. `isprintable` refuses control (Cc), format (Cf,
    such as zero-width), surrogate and space characters other than " ", and a " " may not start or end
    it: an id is never trimmed into another."""
    if not user or len(user) > MAX_USER_ID_LENGTH or not user.isprintable() or user[0] == " " or user[-1] == " ":
        return None
    return user
