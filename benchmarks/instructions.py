"""Instructions per guarded request, counted by valgrind: repeatable whatever else the machine does.

    python benchmarks/instructions.py            # bare, guarded and the orjson round trip, per request

Wall-clock figures on a shared VM drift by up to 1.5x between runs; instruction counts do not, so this
is the tool for comparing two versions of the hot path. It runs this file under
`valgrind --tool=callgrind` with N and 0 requests and divides the difference by N.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def _run(arm: str, requests: int) -> None:
    import orjson
    from apps import grant_consent, make_bare, make_guarded, recommendation_body
    from profile_hot_path import Sink, serve

    if arm == "orjson":
        body = recommendation_body(50)
        for _ in range(requests):
            orjson.dumps(orjson.loads(body))
        return
    app = make_guarded() if arm == "guarded" else make_bare()

    async def main() -> None:
        if arm == "guarded":
            await grant_consent(app)  # type: ignore[arg-type]
        await serve(app, Sink(), 50)  # warm: memo, caches, first-call paths
        if requests:
            await serve(app, Sink(), requests)

    asyncio.run(main())


def _count(arm: str, requests: int) -> int:
    python = Path(sys.executable).resolve()
    result = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            str(python),
            __file__,
            "--run",
            arm,
            str(requests),
        ],
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
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 1
    requests = 300
    per_request = {arm: (_count(arm, requests) - _count(arm, 0)) / requests for arm in ("bare", "guarded", "orjson")}
    added = per_request["guarded"] - per_request["bare"]
    print(f"instructions per request: bare {per_request['bare']:,.0f}, guarded {per_request['guarded']:,.0f}")
    print(f"added by the guardrail: {added:,.0f}; orjson loads+dumps of the body: {per_request['orjson']:,.0f}")
    print(f"ratio (instructions): {added / per_request['orjson']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
