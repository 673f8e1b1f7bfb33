"""The house shape holds: the import contracts in pyproject.toml (what `make lint` checks) are all kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stack import ROOT

pytestmark = pytest.mark.integration


def test_every_import_contract_is_kept() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    kept = [line for line in result.stdout.splitlines() if " KEPT" in line]
    names = " | ".join(kept)
    for contract in (
        "domain imports nothing of",
        "no service imports another",
        "common imports no service",
        "api modules import use cases",
    ):
        assert contract in names, result.stdout[-2000:]
    assert len(kept) >= 7
