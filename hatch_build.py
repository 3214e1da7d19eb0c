"""Build hook: compile guardrail/_speedups.c, the C version of the per-item loop.

A wheel gets the compiled module; an editable install (`pip install -e .`) gets it next to the
sources. Without a working C compiler the build warns and goes on: guardrail then runs the same
loop in Python (guardrail/engine/loop.py), with the same answers, about twice as slowly per item.
GUARDRAIL_NO_EXTENSIONS=1 skips the compiler on purpose.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

MODULE = "guardrail._speedups"
SOURCE = "guardrail/_speedups.c"


class SpeedupsBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("GUARDRAIL_NO_EXTENSIONS"):
            return
        try:
            built = self._compile()
        except Exception as exc:  # any compiler failure means: ship pure Python
            self.app.display_warning(
                f"guardrail: {SOURCE} was not compiled ({exc}); the pure-Python loop will run instead. "
                "Install a C compiler (Debian: apt-get install gcc) and reinstall for the faster one."
            )
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(built)] = f"guardrail/{built.name}"

    def _compile(self) -> Path:
        # setuptools knows every platform's compiler and flags; it is a build requirement only.
        from setuptools import Distribution, Extension
        from setuptools.command.build_ext import build_ext

        # Always compiled afresh, with object files in a scratch directory: a stale build/ directory in the
        # checkout (another Python, another compiler) never stands in for this build.
        with contextlib.chdir(self.root), tempfile.TemporaryDirectory() as scratch:
            distribution = Distribution({"name": "guardrail", "ext_modules": [Extension(MODULE, [SOURCE])]})
            command = build_ext(distribution)
            command.inplace = True
            command.force = True
            command.build_temp = scratch
            command.ensure_finalized()
            command.run()
            return Path(self.root) / command.get_ext_filename(MODULE)
