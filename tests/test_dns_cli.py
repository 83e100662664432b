"""`mss dns` (mss/cli_dns.py): the zone an operator publishes, read back by a real zone-file
parser, and `--check` against a real authoritative DNS server on loopback (dnslib's
``DNSServer`` with a ``ZoneResolver``) serving a zone with records missing or wrong."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.rdata
import dns.zone
import pytest
from click.testing import CliRunner, Result
from dnslib.server import DNSLogger, DNSServer
from dnslib.zoneresolver import ZoneResolver

from core.settings import Settings
from mss.cli import main
from mss.cli_dns import Record, ResolutionError, Status, check, expected_records, parse_server

DOMAIN, HOST = "hopital.test", "mail.hopital.test"
ENV = {"MSS_DOMAIN": DOMAIN, "MSS_HOSTNAME": HOST, "MSS_IMAPS_PORT": "9931",
       "MSS_IMAP_PORT": "1144", "MSS_SUBMISSIONS_PORT": "4651", "MSS_SUBMISSION_PORT": "5871",
       "MSS_WEB_PORT": "8444", "MSS_RELAY_PORT": "2525", "MSS_MANAGESIEVE_PORT": "4191",
       "MSS_OPERATOR_CONTACT": ""}
HOST_A = f"{HOST}. 3600 IN A 192.0.2.10\n"


def mss_dns(data_dir: Path, *args: str, **env: str) -> Result:
    """The real command in this process (``mss`` sets umask 077 for itself: put ours back)."""
    umask = os.umask(0o022)
    try:
        return CliRunner().invoke(main, ["--data-dir", str(data_dir), "dns", *args],
                                  env={**ENV, **env})
    finally:
        os.umask(umask)


@contextmanager
def dns_server(zone_text: str) -> Iterator[str]:
    """An authoritative server for ``zone_text`` on 127.0.0.1, a free UDP port: "IP:PORT"."""
    server = DNSServer(ZoneResolver(zone_text), address="127.0.0.1", port=0,
                       logger=DNSLogger(logf=lambda _line: None))
    server.start_thread()
    try:
        yield f"127.0.0.1:{server.server.server_address[1]}"
    finally:
        server.stop()
        server.server.server_close()


def records_of(zone_text: str) -> set[tuple[str, str, str]]:
    """(name, type, value) of every record, read by dnspython's zone-file parser."""
    zone = dns.zone.from_text(zone_text, origin=f"{DOMAIN}.", check_origin=False,
                              relativize=False)
    return {(name.to_text(), dns.rdatatype.to_text(rdata.rdtype), rdata.to_text())
            for name, _ttl, rdata in zone.iterate_rdatas()}


def edit(zone: str, lines: dict[str, str]) -> str:
    """``zone`` with each record line starting with a key replaced by its value."""
    out = []
    for line in zone.splitlines():
        key = next((k for k in lines if line.startswith(k + " ")), None)
        out.append(line if key is None else lines[key])
    return "\n".join(out) + "\n"


@pytest.fixture
def published(tmp_path: Path) -> str:
    result = mss_dns(tmp_path)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_zone_has_every_record_with_the_settings(published: str) -> None:
    h = f"{HOST}."
    assert records_of(published) == {
        (f"{DOMAIN}.", "MX", f"10 {h}"),
        (f"_submissions._tcp.{DOMAIN}.", "SRV", f"0 1 4651 {h}"),
        (f"_submission._tcp.{DOMAIN}.", "SRV", f"10 1 5871 {h}"),
        (f"_imaps._tcp.{DOMAIN}.", "SRV", f"0 1 9931 {h}"),
        (f"_imap._tcp.{DOMAIN}.", "SRV", f"10 1 1144 {h}"),
        (f"_sieve._tcp.{DOMAIN}.", "SRV", f"0 1 4191 {h}"),
        (f"_pop3._tcp.{DOMAIN}.", "SRV", "0 0 0 ."),
        (f"_pop3s._tcp.{DOMAIN}.", "SRV", "0 0 0 ."),
        (f"autoconfig.{DOMAIN}.", "CNAME", h),
        (f"autodiscover.{DOMAIN}.", "CNAME", h),
        (f"_autodiscover._tcp.{DOMAIN}.", "SRV", f"0 1 8444 {h}"),
        (f"{DOMAIN}.", "CAA", '0 issue "a-renseigner.invalid"'),
        (f"{DOMAIN}.", "CAA", f'0 iodef "mailto:support@{DOMAIN}"'),
    }
    comments = [line for line in published.splitlines() if line.startswith(";")]
    assert len(comments) > 10 and all(line.isprintable() for line in comments)
    text = "\n".join(comments)
    assert "RFC 6186" in text and "RFC 8314" in text and "RFC 8659" in text
    assert "MSS_RELAY_PORT = 2525" in text and "port 443" in text
    assert "0 issue \";\"" in text  # explained, and not published
    assert "ATTENTION" not in text


def test_a_local_host_name_and_a_closed_port_are_told(tmp_path: Path) -> None:
    result = mss_dns(tmp_path, MSS_HOSTNAME="localhost", MSS_IMAP_PORT="0",
                     MSS_OPERATOR_CONTACT="Support : 01 23 45 67 89, 9 h – 18 h")
    assert result.exit_code == 0, result.output
    assert "ATTENTION : MSS_HOSTNAME vaut « localhost »" in result.output
    records = records_of(result.output)
    assert (f"_imap._tcp.{DOMAIN}.", "SRV", "0 0 0 .") in records
    assert not any("iodef" in value for _n, _t, value in records)  # the contact is no address


def test_check_says_present_absent_and_different(published: str, tmp_path: Path) -> None:
    zone = edit(published, {
        f"_imap._tcp.{DOMAIN}.": "",
        f"_imaps._tcp.{DOMAIN}.": f"_imaps._tcp.{DOMAIN}. 3600 IN SRV 0 1 993 {HOST}.",
        f"autoconfig.{DOMAIN}.": f"autoconfig.{DOMAIN}. 3600 IN A 192.0.2.10",
        f"autodiscover.{DOMAIN}.": f"autodiscover.{DOMAIN}. 3600 IN A 192.0.2.99",
    }).replace("a-renseigner.invalid", "letsencrypt.org") + HOST_A
    with dns_server(zone) as server:
        result = mss_dns(tmp_path, "--check", "--server", server)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith(f"auprès de {server} :")

    def status(fragment: str) -> str:
        return next(line for line in lines if fragment in line).split()[0]

    assert status(f"{DOMAIN}. MX") == "présent"
    assert status(f"_imap._tcp.{DOMAIN}.") == "absent"
    assert status(f"_imaps._tcp.{DOMAIN}.") == "différent"
    assert "trouvé : 0 1 993 mail.hopital.test." in result.output
    assert status(f"_submissions._tcp.{DOMAIN}.") == "présent"
    assert status(f"_pop3s._tcp.{DOMAIN}.") == "présent"
    assert status(f"autoconfig.{DOMAIN}.") == "présent"  # A records equal to the host's
    assert f"A/AAAA identiques à ceux de {HOST}." in result.output
    assert status(f"autodiscover.{DOMAIN}.") == "différent"
    assert "trouvé : 192.0.2.99" in result.output
    assert status("CAA 0 issue") == "présent"  # the operator's CA, whichever it is
    assert lines[-1] == ("Bilan : 10 présent(s), 1 absent(s), 2 différent(s), 0 erreur(s) de "
                         "résolution.")


def test_the_published_zone_checks_complete(published: str, tmp_path: Path) -> None:
    with dns_server(published + HOST_A) as server:
        result = mss_dns(tmp_path, "--check", "--server", server)
    assert result.exit_code == 0, result.output
    assert result.output.count("présent ") == 13 and "Bilan : 13 présent(s)" in result.output


def test_a_server_that_never_answers_is_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # receives the questions, answers none
        server = f"127.0.0.1:{silent.getsockname()[1]}"
        result = mss_dns(tmp_path, "--check", "--server", server, "--timeout", "0.2")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert f"pas de réponse de {server} en 0.2 s" in result.output
    assert "13 erreur(s) de résolution" in result.output


@pytest.mark.parametrize("value", ["dns.example", "127.0.0.1:99999", "[::1", "1.2.3.4:53:1"])
def test_a_bad_server_is_a_usage_error(tmp_path: Path, value: str) -> None:
    result = mss_dns(tmp_path, "--check", "--server", value)
    assert result.exit_code == 2 and "IP:PORT" in result.output


def test_server_without_check_is_a_usage_error(tmp_path: Path) -> None:
    result = mss_dns(tmp_path, "--server", "127.0.0.1")
    assert result.exit_code == 2 and "--check" in result.output


def test_parse_server() -> None:
    assert parse_server("192.0.2.1") == ("192.0.2.1", 53)
    assert parse_server("192.0.2.1:5353") == ("192.0.2.1", 5353)
    assert parse_server("[2001:db8::1]:5353") == ("2001:db8::1", 5353)
    assert parse_server("2001:db8::1") == ("2001:db8::1", 53)


def test_check_logic_on_answers_given(tmp_path: Path) -> None:
    """The comparison alone: a CAA that forbids every CA, an answer that failed, and the
    equal-but-differently-written values that match (case, spacing)."""
    settings = Settings.load(data_dir=tmp_path, environ={}, domain=DOMAIN, hostname=HOST)
    records = {r.rtype + " " + r.name: r for r in expected_records(settings)}
    answers: dict[tuple[str, str], tuple[str, ...]] = {
        (f"{DOMAIN}.", "CAA"): ('0 issue ";"',),
        (f"{DOMAIN}.", "MX"): ("10 MAIL.Hopital.Test.", "20 backup.example."),
    }

    def lookup(name: str, rtype: str) -> tuple[str, ...]:
        if name.startswith("_imap."):
            raise ResolutionError("SERVFAIL")
        return answers.get((name, rtype), ())

    wanted = [records[f"CAA {DOMAIN}."], records[f"MX {DOMAIN}."],
              records[f"SRV _imap._tcp.{DOMAIN}."], Record(f"x.{DOMAIN}.", "CNAME", f"{HOST}.",
                                                           kind="alias")]
    verdicts = check(wanted, lookup)
    assert [v.status for v in verdicts] == [Status.DIFFERENT, Status.PRESENT, Status.ERROR,
                                            Status.ABSENT]
    assert verdicts[2].detail == "SERVFAIL"
    assert dns.rdata.from_text("IN", "MX", verdicts[1].found[0]).exchange.to_text() == (
        "MAIL.Hopital.Test.")
