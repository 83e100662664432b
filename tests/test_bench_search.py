"""``bench/search.py`` runs end to end on a small mailbox and prints what the README's
Benchmarks table is made of: the webmail's and IMAP's percentiles, the two ratios, the
full-scan check and a RESULT line (JSON). Its timings are not judged here (a shared test
machine says nothing about them); its own checks are: no message read by a SEARCH
(Dovecot's own count), and the webmail finding as many messages as the same IMAP search,
for every query. A second run reuses the mailbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mailstore_fixtures import open_tempdir

ROOT = Path(__file__).resolve().parent.parent


def _bench(data: Path, *extra: str) -> tuple[int, str]:
    """Run the benchmark; its own process group, ended whole if it overstays."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bench.search", "--data-dir", str(data), "--messages", "300",
         *extra], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MSS_")})
    try:
        out, _ = child.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
        raise AssertionError("bench.search trop long :\n" + out[-3000:]) from None
    return child.returncode, out


@pytest.mark.timeout(900)  # builds and indexes a mailbox, starts Dovecot and the webmail twice
def test_the_search_benchmark_runs_and_reports_its_ratios() -> None:
    root = open_tempdir("mss-bench-search-")
    data = root / "cache"
    try:
        code, out = _bench(data, "--rounds", "24", "--warm-up", "8")
        assert code == 0, out[-3000:]
        for label in ("webmail, tous les dossiers", "IMAP, same search", "IMAP, same work",
                      "ratio webmail / IMAP same search", "ratio webmail / IMAP same work",
                      "webmail, pièce jointe PDF", "CPU per search, webmail",
                      "CPU per search, IMAP, same search", "ratio of CPU webmail / IMAP"):
            assert re.search(rf"^\s*{re.escape(label)}.*p50 +[\d.]+.*p95 +[\d.]+", out, re.M), \
                label
        assert re.search(r"^no full scan: fts_enforced=yes, 0 message\(s\) opened by a SEARCH "
                         r"over \d+ searches -> ok$", out, re.M)
        result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
        assert result["messages"] == 300 and result["mismatches"] == 0 and not result["scan"]
        assert result["search_reads"] == 0
        assert all(v > 0 for v in (*result["webmail_ms"], *result["imap_ms"], *result["ratio"]))
        assert set(result["targets"]) == {"p95_le_100ms", "ratio_p95_le_2"}
        assert result["cpu_ms"]["webmail"][1] > 0  # the webmail's process at least
        code, again = _bench(data, "--rounds", "3", "--warm-up", "0")
        assert code == 0, again[-3000:]
        assert "300 messages: filled in" in again and "RESULT " in again
        assert json.loads((data / "bench-search.json").read_text())["messages"] == 300
    finally:
        shutil.rmtree(root, ignore_errors=True)
