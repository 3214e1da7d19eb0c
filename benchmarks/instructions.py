"""Instructions per guarded request, counted by valgrind: repeatable whatever else the machine does.

    python benchmarks/instructions.py            # bare, guarded and the orjson round trip, per request
    python benchmarks/instructions.py clients    # the sidecar's HTTP client and others (clients.py), per request
    python benchmarks/instructions.py inprocess  # `InProcess.check` per 50-item list (inprocess.py)
    python benchmarks/instructions.py candidate  # guarded with and without a candidate policy at 10%
    python benchmarks/instructions.py why        # guarded with and without the `why` links
    python benchmarks/instructions.py tracing    # guarded with and without traces (the otel extra)

Wall-clock figures on a shared VM drift by up to 1.5x between runs; instruction counts do not, so this
is the tool for comparing two versions of the hot path. It runs this file under
`valgrind --tool=callgrind` with N and 0 requests and divides the difference by N.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def _run(arm: str, requests: int) -> None:
    import orjson
    from apps import grant_consent, make_bare, make_guarded, recommendation_body
    from profile_hot_path import Sink, serve

    if arm in ("check", "check-behind"):
        from inprocess import run_for_instructions

        run_for_instructions(arm, requests)
        return
    if arm in ("yielding", "candidate"):
        _run_candidate(arm, requests)
        return
    if arm.startswith("traces-"):
        _run_traced(arm, requests)
        return
    if arm == "orjson":
        body = recommendation_body(50)
        for _ in range(requests):
            orjson.dumps(orjson.loads(body))
        return
    if arm == "without-why":
        _without_why()
    app = make_guarded() if arm in ("guarded", "without-why") else make_bare()

    async def main() -> None:
        if arm in ("guarded", "without-why"):
            await grant_consent(app)  # type: ignore[arg-type]
        await serve(app, Sink(), 50)  # warm: memo, caches, first-call paths
        if requests:
            await serve(app, Sink(), requests)

    asyncio.run(main())


def _without_why() -> None:
    """The guardrail without each kept item's link to its "why?" page."""
    import guardrail.responder

    setattr(guardrail.responder, "attach_why", lambda *args: None)  # noqa: B010 (a module's global, replaced)


def _run_candidate(arm: str, requests: int) -> None:
    """Guarded requests, each followed by a turn of the event loop, in which the candidate's worker
    runs (as between requests on a server); `candidate`: with a candidate at the default rate, 10%."""
    import random

    from apps import POLICY_PATH, grant_consent, make_guarded
    from profile_hot_path import Sink, serve

    from guardrail import load_policy

    app = make_guarded()
    if arm == "candidate":
        # The demo policy with lower thresholds: some items change action, as a real candidate's do.
        text = POLICY_PATH.read_text(encoding="utf-8").replace("hide_at: 70", "hide_at: 40")
        candidate = POLICY_PATH.with_name("candidate-bench.yaml")
        candidate.write_text(text, encoding="utf-8")
        try:
            app.use_candidate(load_policy(candidate))
        finally:
            candidate.unlink()
        assert app.runtime.sampler is not None
        app.runtime.sampler._draw = random.Random(17).random  # the same requests sampled on every run

    async def main() -> None:
        await grant_consent(app)
        for _ in range(50):  # warm: memo, caches, first-call paths, the candidate's context
            await serve(app, Sink(), 1)
            await asyncio.sleep(0)
        for _ in range(requests):
            await serve(app, Sink(), 1)
            await asyncio.sleep(0)
        if app.runtime.sampler is not None:
            app.runtime.sampler.drain()
            items = {"route": "/recommendations"}
            decided = app.metrics.registry.get_sample_value("guardrail_candidate_items_total", items)
            print(f"the candidate decided {decided or 0:.0f} items", file=sys.stderr)

    asyncio.run(main())


def _run_traced(arm: str, requests: int) -> None:
    """Guarded requests, each from a client in a trace (a `traceparent`). `traces-off`: not traced;
    `traces-sampled`: traced by the SDK, every span kept, batched and encoded as OTLP protobuf for a
    collector (all but the network send); `traces-dropped`: traced, with a sampler that keeps none."""
    from apps import grant_consent, make_guarded
    from profile_hot_path import SCOPE, Sink, check, receive

    provider: Any = None
    if arm != "traces-off":
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

        class Encoded(SpanExporter):
            """The OTLP/HTTP exporter's work up to the bytes it would send."""

            def export(self, spans: Any) -> SpanExportResult:
                encode_spans(spans).SerializeToString()
                return SpanExportResult.SUCCESS

        provider = TracerProvider(sampler=ALWAYS_ON if arm == "traces-sampled" else ALWAYS_OFF)
        provider.add_span_processor(BatchSpanProcessor(Encoded()))
    app = make_guarded(tracer_provider=provider)
    headers = [*SCOPE["headers"], (b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]

    async def main() -> None:
        await grant_consent(app)
        sink = Sink()
        for _ in range(50 + requests):  # the first 50 warm: memo, caches, first-call paths
            await app({**SCOPE, "headers": headers}, receive, sink)
        check(sink)

    asyncio.run(main())
    if provider is not None:
        provider.shutdown()  # the last batch exported (encoded) within the count


def _run_client(client: str, port: int, requests: int) -> None:
    from clients import fetcher

    async def main() -> None:
        async with fetcher(client, port) as fetch:
            for _ in range(50):  # warm: connection open, first-call paths
                await fetch()
            for _ in range(requests):
                await fetch()

    asyncio.run(main())


def _count(*args: str) -> int:
    python = sys.executable  # not resolved: a virtual environment's python finds its packages by its path
    result = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, __file__, *args],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in result.stderr.splitlines():
        if "Collected" in line:
            return int(line.split()[-1])
    raise RuntimeError(result.stderr[-2000:])


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--run":
        _run(sys.argv[2], int(sys.argv[3]))
        return 0
    if len(sys.argv) == 5 and sys.argv[1] == "--run-client":
        _run_client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 1
    if sys.argv[1:] == ["clients"]:
        return clients()
    if sys.argv[1:] == ["inprocess"]:
        return inprocess()
    if sys.argv[1:] == ["candidate"]:
        return candidate()
    if sys.argv[1:] == ["why"]:
        return why()
    if sys.argv[1:] == ["tracing"]:
        return tracing()
    requests = 300
    per_request = {
        arm: (_count("--run", arm, str(requests)) - _count("--run", arm, "0")) / requests
        for arm in ("bare", "guarded", "orjson")
    }
    added = per_request["guarded"] - per_request["bare"]
    print(f"instructions per request: bare {per_request['bare']:,.0f}, guarded {per_request['guarded']:,.0f}")
    print(f"added by the guardrail: {added:,.0f}; orjson loads+dumps of the body: {per_request['orjson']:,.0f}")
    print(f"ratio (instructions): {added / per_request['orjson']:.2f}")
    return 0


def inprocess() -> int:
    """Instructions per 50-item list of `InProcess.check`, resolving the caller from the scope and given
    the middleware's resolution (as behind it), against an orjson loads + dumps of the same body."""
    requests = 300
    per_list = {
        arm: (_count("--run", arm, str(requests)) - _count("--run", arm, "0")) / requests
        for arm in ("check", "check-behind", "orjson")
    }
    print(f"{datetime.now(UTC).date()} `python benchmarks/instructions.py inprocess`, per 50-item list:")
    print(f"check: {per_list['check']:,.0f} ({per_list['check'] / per_list['orjson']:.2f} x orjson)")
    print(
        f"check behind the middleware: {per_list['check-behind']:,.0f} "
        f"({per_list['check-behind'] / per_list['orjson']:.2f} x orjson)"
    )
    print(f"orjson loads+dumps of the body: {per_list['orjson']:,.0f}")
    return 0


def candidate() -> int:
    """Instructions per guarded request with a candidate policy at 10% (its worker's share included),
    against the same requests without one."""
    requests = 1000
    per_request = {
        arm: (_count("--run", arm, str(requests)) - _count("--run", arm, "0")) / requests
        for arm in ("yielding", "candidate")
    }
    added = per_request["candidate"] - per_request["yielding"]
    sampled = (_decided(requests) - _decided(0)) / 50  # the benchmark's page has 50 items
    print(f"{datetime.now(UTC).date()} `python benchmarks/instructions.py candidate`, per guarded request:")
    print(f"without a candidate: {per_request['yielding']:,.0f}; with one at 10%: {per_request['candidate']:,.0f}")
    print(f"added: {added:,.0f} ({added / per_request['yielding']:.1%}), {sampled:.0f} of {requests} requests sampled")
    print(f"per sampled request: {added * requests / sampled:,.0f}")
    return 0


def why() -> int:
    """Instructions per guarded 50-item request with each kept item's `why` link, against the same requests
    without them."""
    requests = 300
    per_request = {
        arm: (_count("--run", arm, str(requests)) - _count("--run", arm, "0")) / requests
        for arm in ("without-why", "guarded")
    }
    added = per_request["guarded"] - per_request["without-why"]
    print(f"{datetime.now(UTC).date()} `python benchmarks/instructions.py why`, per guarded 50-item request:")
    print(f"without the why links: {per_request['without-why']:,.0f}; with them: {per_request['guarded']:,.0f}")
    print(f"added: {added:,.0f} ({added / per_request['without-why']:.1%})")
    return 0


def tracing() -> int:
    """Instructions per guarded request with traces on (the SDK's spans, batched and encoded), and with
    a sampler that keeps none, against the same requests untraced."""
    requests = 300
    per_request = {
        arm: (_count("--run", arm, str(requests)) - _count("--run", arm, "0")) / requests
        for arm in ("traces-off", "traces-sampled", "traces-dropped")
    }
    off = per_request["traces-off"]
    print(f"{datetime.now(UTC).date()} `python benchmarks/instructions.py tracing`, per guarded request:")
    print(f"untraced: {off:,.0f}")
    for arm, what in (("traces-sampled", "traced, every span kept"), ("traces-dropped", "traced, none sampled")):
        added = per_request[arm] - off
        print(f"{what}: {per_request[arm]:,.0f}, added {added:,.0f} ({added / off:.1%})")
    return 0


def _decided(requests: int) -> int:
    """Items the candidate decided in a run of the candidate arm (the same draws as under valgrind)."""
    result = subprocess.run(
        [sys.executable, __file__, "--run", "candidate", str(requests)], capture_output=True, text=True, check=True
    )
    return int(result.stderr.split("the candidate decided ")[1].split()[0])


def clients() -> int:
    """Instructions per request of each way to fetch the upstream's answer (the upstream is a process of
    its own, not counted); written to benchmarks/results/clients.md too."""
    from clients import CLIENTS, PATH
    from harness import RESULTS, machine_info, server, server_options, source_fingerprint

    requests = 200
    rows = []
    with server("bare", 50, *server_options()) as (port, _):
        for client in CLIENTS:
            counts = [_count("--run-client", client, str(port), str(n)) for n in (requests, 0)]
            per_request = (counts[0] - counts[1]) / requests
            print(f"{client}: {per_request:,.0f} instructions per request", flush=True)
            rows.append(f"| {client} | {per_request:,.0f} |")
    (RESULTS / "clients.md").write_text(
        "\n".join(
            [
                "# What an HTTP client costs the sidecar per request, in instructions",
                "",
                f"Run {datetime.now(UTC).isoformat(timespec='seconds')} with `python benchmarks/instructions.py "
                f"clients`, on guardrail sources {source_fingerprint()}: `GET {PATH.decode()}` from the overhead "
                f"benchmark's bare app (50 items, its own process), one request at a time on a kept-alive "
                f"connection, {requests} requests counted by valgrind's callgrind after 50 to warm up. The clients "
                "are described in benchmarks/clients.py.",
                "",
                "| client | instructions per request |",
                "|---|---:|",
                *rows,
                "",
                "Machine: " + ", ".join(f"{key} {value}" for key, value in machine_info().items()) + ".",
                "",
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
