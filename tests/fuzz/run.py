"""Coverage-guided fuzzing of one target with atheris (libFuzzer), guardrail's code instrumented.

    python -m tests.fuzz.run TARGET [libFuzzer options] [CORPUS_DIR ...]

TARGET is one of tests/fuzz/targets.py's TARGETS. Without a corpus directory the corpus lives in
`.fuzz/TARGET/` (seeded on first use from tests/fuzz/seeds.py, and kept between runs), and a crashing
input is written to `.fuzz/TARGET-crash-<sha1>`. The target's dictionary (tests/fuzz/dicts/) is used
unless `-dict=` says otherwise. Useful options: `-max_total_time=SECONDS`, `-jobs=N`,
`-seed=N`; `-help=1` lists them. Replay a crash with `python -m tests.fuzz.run TARGET .fuzz/TARGET-crash-...`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import atheris

if not __package__:  # run as a file: the checkout goes after site-packages, so an installed guardrail wins
    sys.path.append(str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["guardrail"]):
    from guardrail.logs import JsonFormatter
    from tests.fuzz.seeds import write_seeds
    from tests.fuzz.targets import TARGETS

DICTS = Path(__file__).resolve().parent / "dicts"


class _FormatAndDrop(logging.Handler):
    """Every log line is still formatted (a fuzzed value must not break a log line), then dropped:
    thousands of warnings a second would drown the fuzzer's own report."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [libFuzzer options] [CORPUS_DIR ...]")
    name, options = argv[1], argv[2:]
    handler = _FormatAndDrop()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("guardrail")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    dictionary = DICTS / f"{name}.dict"
    if dictionary.is_file() and not any(option.startswith("-dict=") for option in options):
        options.append(f"-dict={dictionary}")
    if not any(not option.startswith("-") for option in options):
        corpus = Path(".fuzz") / name
        if not corpus.is_dir():
            write_seeds(name, corpus)
        options.append(str(corpus))
        if not any(option.startswith("-artifact_prefix=") for option in options):
            options.append(f"-artifact_prefix={corpus}-")
    atheris.Setup([argv[0], *options], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
