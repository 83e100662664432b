"""The soak's own arithmetic and arguments (bench/soak.py); the soak itself runs by hand (README,
*Soak*): minutes of load on the whole machine."""

from __future__ import annotations

import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from bench import soak


def test_a_setting_without_a_value_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        soak.main(["--setting", "QUEUE_WORKERS"])
    assert stopped.value.code == 2
    assert "NOM=VALEUR attendu" in capsys.readouterr().err


def test_quantiles_from_buckets_as_prometheus_computes_them() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert soak.bucket_quantile(0.5, buckets) == pytest.approx(0.1)
    assert soak.bucket_quantile(0.7, buckets) == pytest.approx(0.3)  # halfway in (0.1, 0.5]
    assert soak.bucket_quantile(0.99, buckets) == pytest.approx(0.95)
    assert math.isnan(soak.bucket_quantile(0.5, {float("inf"): 0.0}))


def test_submitters_arrive_as_a_poisson_process_not_in_step() -> None:
    """Eight submitters at 2 s each: their first sends spread over the first interval (not all
    at once, as before 2026-12-07), and the gaps average the interval with the spread of an
    exponential distribution (standard deviation = mean)."""
    firsts = [next(soak.arrival_gaps(2.0, random.Random(seed))) for seed in range(8)]
    assert all(0.0 <= f <= 2.0 for f in firsts) and len(set(firsts)) == 8
    gaps = soak.arrival_gaps(2.0, random.Random(7))
    next(gaps)
    drawn = [next(gaps) for _ in range(20_000)]
    assert statistics.fmean(drawn) == pytest.approx(2.0, rel=0.05)
    assert statistics.stdev(drawn) == pytest.approx(2.0, rel=0.05)
    assert {next(soak.arrival_gaps(0.0)) for _ in range(3)} == {0.0}  # as fast as possible


BURN_IN_A_CHILD = """
import subprocess, sys
subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
print("reaped", flush=True)
sys.stdin.readline()
"""


def test_a_role_s_cpu_includes_the_children_it_reaped(tmp_path: Path) -> None:
    """A role process whose child burnt CPU and ended (as Dovecot's IMAP processes do after
    each login): the child's seconds are in the role's count, through the parent's cutime."""
    services = soak.Services(tmp_path, None)
    with subprocess.Popen([sys.executable, "-c", BURN_IN_A_CHILD], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as role:
        assert role.stdout is not None and role.stdin is not None
        services.procs["gateway"] = role
        assert role.stdout.readline().strip() == "reaped"
        seen = services.cpu_by_process()
        role.stdin.write("\n")
        role.stdin.flush()
    assert [(r, pid) for r, pid, _name in seen] == [("gateway", role.pid)]  # the child is gone
    assert sum(seen.values()) >= 0.05  # the child's loop: a few tenths of a second


def test_cpu_report_per_message_per_role(capsys: pytest.CaptureFixture[str]) -> None:
    before = {("gateway", 1, "python"): 1.0, ("mailstore", 2, "lmtp"): 0.5}
    after = {("gateway", 1, "python"): 3.0, ("mailstore", 2, "lmtp"): 1.5,
             ("mailstore", 3, "indexer-worker"): 2.0, ("webmail", 4, "python"): 0.2}
    soak.cpu_report(before, after, client=1.0, machine=(150.0, 200.0), messages=1000)
    said = capsys.readouterr().out
    assert "machine occupée à 75 %" in said
    assert "gateway 2.0 ms, webmail 0.2 ms, mailstore 3.0 ms" in said
    assert "(indexer-worker 2.0 ms, lmtp 1.0 ms)" in said and "client de charge 1.0 ms" in said
