"""Which files an ingest looks at: the supported files under the paths it is given, and one line for each
path that does not exist."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from rag.loaders import SUPPORTED_SUFFIXES


def discover(paths: Iterable[Path | str]) -> tuple[list[Path], list[str]]:
    """Supported files under `paths` (recursive, sorted, hidden files skipped) and errors for missing paths."""
    found: dict[Path, None] = {}
    errors: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found[path.resolve()] = None
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    p = Path(root, name)
                    if not name.startswith(".") and p.suffix.lower() in SUPPORTED_SUFFIXES:
                        found[p.resolve()] = None
        else:
            errors.append(f"{path}: no such file or folder")
    return list(found), errors
