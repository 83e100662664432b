"""CI's short fuzzing run (issue 7): every target of ``bench.fuzz`` with a few dozen
generated inputs against a real gateway, Dovecot, database and webmail application. The long
run is ``python -m bench.fuzz --examples 100000`` (README, "Benchmarks")."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from bench import fuzz
from tests.mailstore_fixtures import open_tempdir

pytestmark = pytest.mark.timeout(240)

EXAMPLES = {"smtp_lines": 40, "smtp_data": 25, "mime": 60, "smime": 60, "whitelist": 60,
            "csv": 60, "web_login": 30, "web_register": 20}


@pytest.fixture(scope="module")
def ctx() -> Iterator[fuzz.Context]:
    root = open_tempdir("mss-fuzz-")
    context = fuzz.open_context(root)
    yield context
    fuzz.close_context(context)
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("target", list(EXAMPLES))
def test_fuzz_target(ctx: fuzz.Context, target: str) -> None:
    before = ctx.counts.get(target, 0)
    fuzz.run(ctx, target, EXAMPLES[target], fuzz.targets(ctx)[target][1])
    assert ctx.counts.get(target, 0) > before
