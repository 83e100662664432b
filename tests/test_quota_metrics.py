"""How full the mailboxes are, from a real Dovecot (its own, so that the counts are this
module's): mailboxes filled over LMTP past 80 %, 90 % and — a quota lowered under what is
stored — 100 % of their quota show in ``mss_mailboxes_quota_over{threshold}`` and
``mss_mailbox_quota_max_ratio``, through the registry and the gateway's HTTP endpoint, with no
address anywhere in the metrics; the summary is cached (a scrape inside the TTL runs no
doveadm) and refreshed after it; ``mss quota`` names the mailboxes for the operator."""

from __future__ import annotations

import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from gateway.metrics import Metrics
from gateway.service import GatewayService
from mailstore import quota_usage
from mailstore.errors import DovecotUnavailable
from mailstore.lmtp import LmtpClient
from mailstore.service import DovecotService
from tests.gateway_fixtures import build_operator
from tests.mailstore_fixtures import TEST_OPTIONS, TrustSpace, free_port, open_tempdir
from tests.test_cli import assert_clean_error, mss
from trust_space.models import Mailbox

LINE = 78  # bytes per body line as Dovecot counts them (76 characters + CRLF, quota_vsizes)


@dataclass
class Store:
    space: TrustSpace
    dovecot: DovecotService

    def fill(self, name: str, kib: int) -> None:
        """Deliver about ``kib`` KiB into ``name``'s INBOX over LMTP."""
        raw = self.space.message("Imagerie", body=("x" * 76 + "\n") * (kib * 1024 // LINE))
        results = LmtpClient.for_settings(self.space.settings).deliver(
            raw, "marie.martin@mss.test", [self.space.address(name)])
        assert all(r.delivered for r in results.values()), results

    def set_quota(self, name: str, mb: int) -> None:
        with self.space.db.transaction() as session:
            box = session.scalars(select(Mailbox).where(
                Mailbox.address == self.space.address(name))).one()
            box.quota_mb = mb

    def read(self) -> list[quota_usage.Usage]:
        return quota_usage.read_all(self.dovecot.paths)


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    root = open_tempdir("mss-quota-")
    space = build_operator(root, "mss.test", "Operateur Quota", managesieve_port=0)
    dovecot = DovecotService(space.settings, space.db, options=TEST_OPTIONS)
    dovecot.start()
    yield Store(space, dovecot)
    dovecot.stop()
    space.db.dispose()
    shutil.rmtree(root, ignore_errors=True)


Reader = Callable[[], list[quota_usage.Usage]]


def counting(read: Reader) -> tuple[list[int], Reader]:
    calls = [0]

    def counted() -> list[quota_usage.Usage]:
        calls[0] += 1
        return read()
    return calls, counted


def test_parse_doveadm_table() -> None:
    text = ("Username\tQuota name\tType\tValue\tLimit\t%\n"
            "a@mss.test\tQuota\tSTORAGE\t900\t1000\t90\n"
            "a@mss.test\tQuota\tMESSAGE\t3\t-\t0\n"
            "b@mss.test\tQuota\tSTORAGE\t10\t-\t0\n"
            "b@mss.test\tQuota\tMESSAGE\t1\t-\t0\n")
    a, b = quota_usage.parse(text)
    assert (a.address, a.used_kib, a.limit_kib, a.messages, a.ratio) == (
        "a@mss.test", 900, 1000, 3, 0.9)
    assert b.ratio is None and b.limit_kib is None  # no limit: never "full"
    summary = quota_usage.summarise([a, b])
    assert summary.over == {80: 1, 90: 1, 100: 0} and summary.max_ratio == 0.9
    assert summary.mailboxes == 2
    for bad in ("", "pas un tableau\n", "Username\tQuota\nx\ty\n",
                "Username\tQuota name\tType\tValue\tLimit\t%\na\tQ\tSTORAGE\tbeaucoup\t1\t0\n"):
        with pytest.raises(DovecotUnavailable):
            quota_usage.parse(bad)


def test_quota_gauges_follow_the_mailboxes(store: Store) -> None:
    empty = quota_usage.summarise(store.read())
    assert empty.mailboxes == 11 and empty.over == {80: 0, 90: 0, 100: 0}

    calls, read = counting(store.read)
    metrics = Metrics()
    metrics.watch_quota(quota_usage.QuotaWatch(read, ttl=3600, wait=30).current)
    value = metrics.registry.get_sample_value

    def over(threshold: str) -> float | None:
        return value("mss_mailboxes_quota_over", {"threshold": threshold})

    store.fill("nina", 850)  # Nina has 1 MB: about 83 %
    assert (over("80"), over("90"), over("100")) == (1, 0, 0)
    ratio = value("mss_mailbox_quota_max_ratio")
    assert ratio is not None and 0.8 <= ratio < 0.9
    store.fill("nina", 110)  # about 94 %: but within the TTL a scrape runs no doveadm
    assert (over("80"), over("90")) == (1, 0) and calls[0] == 1

    fresh = Metrics()
    fresh.watch_quota(quota_usage.QuotaWatch(store.read, ttl=3600, wait=30).current)
    assert fresh.registry.get_sample_value("mss_mailboxes_quota_over",
                                           {"threshold": "90"}) == 1
    # The operator lowers Paul's quota under what he already holds: over 100 %.
    store.fill("paul", 1500)
    store.set_quota("paul", 1)
    usages = {u.address: u for u in store.read()}
    paul = usages[store.space.address("paul")]
    assert paul.limit_kib == 1024 and paul.ratio is not None and paul.ratio > 1.4
    summary = quota_usage.summarise(usages.values())
    assert summary.over == {80: 2, 90: 2, 100: 1} and summary.max_ratio == paul.ratio


def test_refresh_after_the_ttl_and_no_stale_values(store: Store) -> None:
    calls, read = counting(store.read)
    watch = quota_usage.QuotaWatch(read, ttl=0.3, wait=30)
    first = watch.current()
    assert first is not None and calls[0] == 1
    time.sleep(0.35)
    assert watch.current() == first  # at once: the refresh runs in the background
    deadline = time.monotonic() + 20
    while calls[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls[0] == 2

    broken = [False]

    def flaky() -> list[quota_usage.Usage]:
        if broken[0]:
            raise DovecotUnavailable("doveadm quota en échec")
        return store.read()
    watch = quota_usage.QuotaWatch(flaky, ttl=0.2, wait=30)
    assert watch.current() is not None
    broken[0] = True
    time.sleep(0.25)
    assert watch.current() is not None  # one failed refresh keeps the last summary
    time.sleep(0.5)
    watch.current()
    time.sleep(0.1)
    assert watch.current() is None  # older than three TTLs: no sample rather than stale


def test_gateway_endpoint_exports_counts_without_addresses(store: Store) -> None:
    port = free_port()
    settings = store.space.settings.replace(metrics_port=port, listen_address="127.0.0.1",
                                            whitelist_url="")
    gateway = GatewayService(settings, store.space.db, workers=0)
    gateway.start()
    try:
        deadline = time.monotonic() + 30
        while True:  # the first scrape waits 2 s at most for doveadm, then answers without
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as ans:
                body = ans.read().decode()
            if "mss_mailbox_quota_max_ratio " in body or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        gateway.stop()
    expected = quota_usage.summarise(store.read())
    for threshold, count in expected.over.items():
        assert f'mss_mailboxes_quota_over{{threshold="{threshold}"}} {count:.1f}' in body
    assert f"mss_mailbox_quota_max_ratio {expected.max_ratio!r}" in body
    assert "@" not in body and "nina" not in body and "paul" not in body


def test_mss_quota_lists_the_full_mailboxes(store: Store) -> None:
    data = store.space.settings.data_dir
    listed = mss(data, "quota", "--over", "90")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].startswith("11 boîte(s) mesurée(s)")
    names = [line.split()[0] for line in lines[1:]]
    assert names == [store.space.address("paul"), store.space.address("nina")]  # fullest first
    assert mss(data, "quota", "--over", "1000").stdout.endswith(
        "Aucune boîte à 1000 % de son quota ou plus.\n")


def test_mss_quota_without_a_mail_store(tmp_path: object) -> None:
    assert_clean_error(mss(tmp_path, "quota"), "Dovecot n'est pas configuré ici")  # type: ignore[arg-type]
