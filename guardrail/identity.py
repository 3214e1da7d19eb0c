"""Who is asking: identity only from the policy's trusted source (design §7).

A header (`identity.header`, `identity.age_header`) counts only when the TCP peer is one of
`identity.trusted_proxies`; from anyone else the caller is anonymous, whatever the header says.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from guardrail.policy.models import Identity as IdentitySettings

MAX_USER_ID_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Caller:
    user: str | None = None
    age: int | None = None


ANONYMOUS = Caller()


class IdentityResolver:
    def __init__(self, settings: IdentitySettings) -> None:
        self.source = settings.source
        self.header = settings.header.encode("latin-1")
        self.age_header = settings.age_header.encode("latin-1") if settings.age_header else None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.trusted_proxies]
        self._trusted_hosts: dict[str, bool] = {}
        # The header names this resolver wants from a request, read in the same pass as the others.
        self.wanted = frozenset(h for h in (self.header, self.age_header) if h is not None)

    def is_trusted(self, scope: Any) -> bool:
        client = scope.get("client")
        if not client:
            return False
        host = client[0]
        trusted = self._trusted_hosts.get(host)
        if trusted is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                trusted = False  # a unix socket or a test client's made-up name is not an address
            else:
                trusted = any(address in network for network in self._networks)
            if len(self._trusted_hosts) < 10_000:
                self._trusted_hosts[host] = trusted
        return trusted

    def resolve(self, scope: Any, headers: dict[bytes, bytes]) -> Caller:
        if self.source == "scope":
            return _from_scope_user(scope)
        if self.source != "header" or not self.is_trusted(scope):
            return ANONYMOUS
        user = _clean_user_id(headers.get(self.header))
        if user is None:
            return ANONYMOUS
        age = _parse_age(headers.get(self.age_header)) if self.age_header else None
        return Caller(user, age)


def _clean_user_id(raw: bytes | None) -> str | None:
    if not raw:
        return None
    try:
        user = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not user or len(user) > MAX_USER_ID_LENGTH or not user.isprintable():
        return None
    return user


def _parse_age(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or len(text) > 3:
        return None
    return int(text)


def _from_scope_user(scope: Any) -> Caller:
    # Starlette's AuthenticationMiddleware puts a BaseUser in scope["user"].
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return ANONYMOUS
    name = _clean_user_id(str(getattr(user, "identity", "") or "").encode())
    age = getattr(user, "age", None)
    return Caller(name, age if isinstance(age, int) and not isinstance(age, bool) else None)
