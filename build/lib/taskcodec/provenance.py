"""Where a result came from: the command that ran, the git revision and whether tracked files were edited."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def run_provenance(**extra) -> dict:
    """``{"command", "git_revision", "git_dirty", **extra}`` of this process, for a results folder.

    ``git_dirty`` is true when tracked files differ from the revision (untracked files do not count);
    the revision is ``"unknown"`` outside a git checkout.
    """
    return {
        "command": " ".join(["python", *sys.argv]),
        "git_revision": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        **extra,
    }
