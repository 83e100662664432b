"""The suite's own scheduling (tests/conftest.py): the modules it runs first exist, so that a
renamed module does not silently fall back to the end of the run."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LONG_MODULES


def test_the_long_modules_run_first_exist() -> None:
    here = Path(__file__).parent
    missing = [name for name in LONG_MODULES if not (here / f"{name}.py").is_file()]
    assert not missing, missing
    assert len(set(LONG_MODULES)) == len(LONG_MODULES)
