"""benchmarks/profile_server.py reads py-spy's collapsed stacks into parts that add up to 100%.

Each sample counts once, for the innermost frame that belongs to a part; orjson, which has no
Python frame, is named by the code of the line that calls it. Hand-made stacks, no server.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from profile_server import (  # noqa: E402
    BUCKETS,
    ENGINE,
    GUARDRAIL,
    ITEMS,
    METRICS,
    ORJSON_DUMPS,
    ORJSON_LOADS,
    OTHER,
    SERVER,
    STARLETTE,
    Frame,
    Recording,
    analyse,
    bucket_of,
    markdown,
    parse_frame,
    read_collapsed,
)

ROOT = "_run_module_as_main (<frozen runpy>:198);main (uvicorn/main.py:448);Runner.run (asyncio/runners.py:118)"
CYCLE = f"{ROOT};RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422)"
GUARD = f"{CYCLE};GuardrailMiddleware.__call__ (guardrail/middleware.py:137)"
FINISH = f"{GUARD};GuardedResponder._finish (guardrail/responder.py"
CODE = {
    ("guardrail/responder.py", 152): "document = orjson.loads(body)",
    ("guardrail/responder.py", 160): "checked = check_items(self.ctx, self.route, items)",
    ("guardrail/responder.py", 170): "document = orjson.loads(self.decoded(body))",
    ("guardrail/responder.py", 219): "return orjson.dumps(document)",
}


def source(frame: Frame) -> str:
    return CODE.get((frame.file, frame.line or 0), "")


COLLAPSED = "\n".join(
    [
        'process 12:"python -m uvicorn";' + f"{FINISH}:152) 30",  # orjson.loads, its C code invisible
        f"{GUARD};GuardedResponder._rewritten (guardrail/responder.py:219) 10",  # orjson.dumps
        # With --native: orjson's C frames, then the interpreter's, below the line that called it.
        f"{FINISH}:152);0x7f0e58eb8929 (orjson/orjson.cpython-311-x86_64-linux-gnu.so);Py_DECREF (object.h:537) 5",
        f"{FINISH}:160);check_items (guardrail/engine/loop.py:118) 20",
        # The engine called from the item loop, in a dataclass __init__ (no part of its own).
        f"{FINISH}:160);check_items (guardrail/engine/loop.py:101);decide (guardrail/engine/evaluate.py:40);"
        "__create_fn__.<locals>.__init__ (<string>:3) 4",
        # A line calling loads( that is not the innermost Python frame: not orjson's time.
        f"{FINISH}:170);GuardedResponder.decoded (<string>:2) 3",
        f"{GUARD};MutexValue.inc (prometheus_client/values.py:28) 2",
        f"{GUARD};Starlette.__call__ (starlette/applications.py:96);_routes.<locals>.recommendations (apps.py:122) 6",
        f"{CYCLE};RequestResponseCycle.send (uvicorn/protocols/http/httptools_impl.py:524) 8",
        f"{ROOT};0x7f0e59000000 (uvloop/loop.cpython-311-x86_64-linux-gnu.so);write (libc.so.6) 7",
        "_run_module_as_main (<frozen runpy>:198) 1",
        "",
    ]
)


def test_frames_of_every_kind_are_read() -> None:
    assert parse_frame("check_items (guardrail/engine/loop.py:118)") == Frame(
        "check_items", "guardrail/engine/loop.py", 118
    )
    assert parse_frame("Runner.run (asyncio/runners.py)") == Frame("Runner.run", "asyncio/runners.py", None)
    assert parse_frame("<module> (<frozen runpy>:88)") == Frame("<module>", "<frozen runpy>", 88)
    native = parse_frame("write (libc.so.6)")
    assert native == Frame("write", "libc.so.6", None)
    assert not native.python
    assert parse_frame("Py_DECREF (object.h:537)").python is False


def test_each_sample_counts_once_for_its_innermost_part() -> None:
    stacks = read_collapsed(COLLAPSED)
    assert [count for _, count in stacks] == [30, 10, 5, 20, 4, 3, 2, 6, 8, 7, 1]
    assert not any(frame.function.startswith("process ") for frame in stacks[0][0])
    assert [bucket_of(stack, source) for stack, _ in stacks] == [
        ORJSON_LOADS,
        ORJSON_DUMPS,
        ORJSON_LOADS,
        ITEMS,
        ENGINE,
        GUARDRAIL,
        METRICS,
        STARLETTE,
        SERVER,
        SERVER,
        OTHER,
    ]
    profile = analyse(stacks, source)
    assert list(profile.buckets) == list(BUCKETS)
    assert profile.samples == sum(profile.buckets.values()) == 96
    assert profile.buckets[ORJSON_LOADS] == 35
    assert profile.functions["GuardedResponder._finish (guardrail/responder.py)"] == 30
    assert profile.functions["check_items (guardrail/engine/loop.py)"] == 20


def test_the_report_lists_every_part_and_the_hottest_line() -> None:
    profile = analyse(read_collapsed(COLLAPSED), source)
    args = argparse.Namespace(items=50, connections=32, rate=1000, duration=10, warmup=2, blocking=False)
    setup = {
        "date": "2026-11-26T15:00:00+00:00",
        "command": "python benchmarks/profile_server.py",
        "sources": "0123456789ab",
        "body_bytes": "6835",
        "loop": "uvloop",
        "http": "httptools",
        "warmup_rps": "3,600",
        "profiled_rps": "3,500",
    }
    text = markdown(args, profile, Recording(100, 4, 1.0, 0.0, 0.2), setup, {"nproc": "2"}, source)
    assert "--nonblocking" in text
    assert f"| {ORJSON_LOADS} | 35 | 36.5% |" in text
    assert all(f"| {bucket} |" in text for bucket in BUCKETS if bucket != "orjson loads and dumps on one line")
    assert (
        "| 31.2% | `GuardedResponder._finish (guardrail/responder.py)` | 152: `document = orjson.loads(body)` (100%) |"
        in text
    )
