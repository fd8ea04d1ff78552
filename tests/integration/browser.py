"""Debian's headless Chromium as the brief prescribes it: no sandbox, no GPU, no network."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import unavailable

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


def chromium_or_skip() -> str:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        unavailable(f"{CHROMIUM} is not installed (Debian package chromium)")
    return CHROMIUM
