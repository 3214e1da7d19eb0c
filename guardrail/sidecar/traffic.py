"""What the sidecar counts of the traffic it proxies (docs/operations.md#metrics):
`guardrail_upstream_requests_total{route,status_class}` and `guardrail_upstream_seconds{route}`.

`route` is the policy route the middleware matched (`guardrail.routes.ROUTE_TEMPLATE` in the scope), else
`other`: bounded, never a raw path. `status_class` is `2xx` … `5xx`, or `error` when no answer came
(connect error, timeout, broken exchange). Both go through the metrics' tally, as the hot path's counts do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guardrail.metrics import NO_ANSWER, STATUS_CLASSES, Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram


def status_class(status: int) -> str:
    return f"{status // 100}xx"


class ProxiedTraffic:
    """Counts each proxied request once, by route and status class, with the upstream's time."""

    __slots__ = ("_metrics", "_routes")

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        # Per route: its histogram and its counters by status class, looked up once (`labels()` locks).
        self._routes: dict[str, tuple[Histogram, dict[str, Counter]]] = {}

    def count(self, route: str, status: int | None, seconds: float) -> None:
        """One request on `route`: answered with `status`, or not at all (None), after `seconds`."""
        found = self._routes.get(route)
        if found is None:
            found = self._routes[route] = self._add(route)
        seconds_child, by_class = found
        name = NO_ANSWER if status is None else status_class(status)
        counter = by_class.get(name)
        if counter is None:
            counter = by_class[name] = self._metrics.upstream_requests.labels(route, name)
        tally = self._metrics.tally
        tally.add(counter)
        tally.observe(seconds_child, seconds)

    def _add(self, route: str) -> tuple[Histogram, dict[str, Counter]]:
        # Every usual class exists from the route's first request, at 0: an error ratio then sees the
        # first error, which a series born at 1 would hide from rate().
        metrics = self._metrics
        by_class = {name: metrics.upstream_requests.labels(route, name) for name in STATUS_CLASSES}
        return metrics.upstream_seconds.labels(route), by_class
