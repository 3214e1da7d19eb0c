"""A ConfigMap volume written the way the kubelet writes it (its `AtomicWriter`), for the reload tests.

The mount directory holds `..<timestamp>/` with the files, a `..data` symlink to it, and, per key, a
symlink `key -> ..data/key`. An update writes a new `..<timestamp>/`, points a `..data_tmp` symlink at
it, renames that over `..data` (the one atomic step: a reader sees the old files or the new ones, whole)
and removes the old directory. The user-visible path never changes; what it resolves to does.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_DATA = "..data"
_serial = itertools.count()


def project(mount: Path, files: dict[str, str]) -> None:
    """Write `files` (name → content) into the ConfigMap volume at `mount`, as a first write or an update."""
    mount.mkdir(parents=True, exist_ok=True)
    fresh = mount / f"..2026_11_26_12_00_00.{os.getpid()}{next(_serial):06d}"
    fresh.mkdir()
    for name, content in files.items():
        (fresh / name).write_text(content, encoding="utf-8")
        (fresh / name).chmod(0o644)
    data = mount / _DATA
    previous = os.readlink(data) if data.is_symlink() else None
    for name in files:
        link = mount / name
        if not link.is_symlink():
            link.symlink_to(f"{_DATA}/{name}")
    swap = mount / f"{_DATA}_tmp"
    swap.symlink_to(fresh.name)
    swap.replace(data)
    if previous is not None:
        shutil.rmtree(mount / previous)
