"""The shared package's shape: every module a screen or so long, as in the services (their layout tests)."""

from __future__ import annotations

from pathlib import Path

import common

PACKAGE = Path(common.__file__).parent
MODULES = sorted(path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts)


def test_the_shared_package_is_there() -> None:
    assert {"consumer.py", "outbox.py", "sqlprep.py", "db.py"} <= {path.name for path in MODULES}


def test_no_common_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in MODULES
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long
