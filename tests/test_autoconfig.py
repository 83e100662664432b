"""Mail client autoconfiguration (webmail/autoconfig.py, ECO.1.1.9) through the real webmail
application: Thunderbird's ``config-v1.1.xml`` read the way Thunderbird reads it, Microsoft
Autodiscover (POX) with the requests Outlook and Thunderbird send, and what a hostile client
sends instead (entity bombs, external entities, another domain, a huge body)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from flask.testing import FlaskClient

from core.db import Database
from core.settings import Settings
from tests.webmail_helpers import Web
from webmail import create_app
from webmail.autoconfig import MAX_BODY, NS_OUTLOOK, NS_RESPONSE, authentications

pytest_plugins = ["tests.webmail_fixtures"]

DOMAIN, HOST = "hopital.test", "mail.hopital.test"
PORTS = {"imaps_port": 9931, "imap_port": 1144, "submissions_port": 4651,
         "submission_port": 5871, "web_port": 8444}
XML_TYPE = "application/xml; charset=utf-8"
TB_URLS = ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml")
AD_URLS = ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml")
NS_REQUEST = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
# What Thunderbird desktop maps (readFromXML.sys.mjs): socketType, and authentication per
# direction; OAuth2 counts only for hosts in its OAuth2Providers list, so not for ours.
TB_SOCKETS = {"plain", "SSL", "STARTTLS"}
TB_AUTH_IN = {"password-cleartext", "plain", "password-encrypted", "secure", "GSSAPI", "NTLM"}
TB_AUTH_OUT = TB_AUTH_IN | {"none", "client-IP-address", "smtp-after-pop"}
# The format's documented authentication values (Thunderbird:Autoconfiguration:ConfigFileFormat).
KNOWN_AUTH = TB_AUTH_OUT | {"OAuth2", "TLS-client-cert"}


def outlook_request(address: str, schema: str = NS_OUTLOOK) -> bytes:
    """The request Outlook and Thunderbird (ExchangeAutoDiscover.sys.mjs) POST."""
    return (f'<?xml version="1.0" encoding="utf-8"?>\n'
            f'<Autodiscover xmlns="{NS_REQUEST}">\n  <Request>\n'
            f'    <EMailAddress>{address}</EMailAddress>\n'
            f'    <AcceptableResponseSchema>{schema}</AcceptableResponseSchema>\n'
            f'  </Request>\n</Autodiscover>').encode()


@pytest.fixture
def site(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    data.mkdir()
    return Settings.load(data_dir=data, environ={}, domain=DOMAIN, hostname=HOST, **PORTS)


@pytest.fixture
def client(site: Settings, sqlite_db: Database) -> FlaskClient:
    client = create_app(site, sqlite_db, {"TESTING": True}).test_client()
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


def post_xml(client: FlaskClient, body: bytes, url: str = AD_URLS[0], **headers: str):  # type: ignore[no-untyped-def]
    return client.post(url, data=body, headers={"Content-Type": "text/xml; charset=utf-8",
                                                **headers})


def assert_plain_xml_answer(response) -> None:  # type: ignore[no-untyped-def]
    """No cookie, the webmail's security headers, XML that a client can take as such."""
    assert response.headers["Content-Type"] == XML_TYPE
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def text(element: ET.Element, tag: str) -> str:
    found = element.find(tag)
    assert found is not None and found.text is not None, f"<{tag}> missing"
    return found.text


def thunderbird_choice(server: ET.Element, auth_map: set[str]) -> tuple[str, str]:
    """The (socketType, authentication) Thunderbird keeps: the first value it knows of each."""
    socket = next(s.text for s in server.findall("socketType") if s.text in TB_SOCKETS)
    auth = next(a.text for a in server.findall("authentication") if a.text in auth_map)
    assert socket and auth
    return socket, auth


@pytest.mark.parametrize("url", TB_URLS)
def test_thunderbird_reads_servers_ports_and_methods(client: FlaskClient, site: Settings,
                                                     url: str) -> None:
    response = client.get(url, query_string={"emailaddress": f"marie.martin@{DOMAIN}"})
    assert response.status_code == 200
    assert_plain_xml_answer(response)
    assert response.data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(response.data)
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    providers = root.findall("emailProvider")
    assert len(providers) == 1 and providers[0].get("id") == DOMAIN
    provider = providers[0]
    assert [d.text for d in provider.findall("domain")] == [DOMAIN]
    assert text(provider, "displayName") == site.operator_name

    incoming, outgoing = provider.findall("incomingServer"), provider.findall("outgoingServer")
    assert [(s.get("type"), text(s, "port"), text(s, "socketType")) for s in incoming] == [
        ("imap", "9931", "SSL"), ("imap", "1144", "STARTTLS")]
    assert [(s.get("type"), text(s, "port"), text(s, "socketType")) for s in outgoing] == [
        ("smtp", "4651", "SSL"), ("smtp", "5871", "STARTTLS")]
    for server in incoming + outgoing:
        assert text(server, "hostname") == HOST  # the public name, not the request's host
        assert text(server, "username") == "%EMAILADDRESS%"
        assert len(server.findall("socketType")) == 1
        methods = [a.text for a in server.findall("authentication")]
        assert methods == ["password-cleartext", "TLS-client-cert"]  # no issuer: no OAuth2
        assert set(methods) <= KNOWN_AUTH
        # Thunderbird for Android refuses any socketType but SSL / STARTTLS.
        assert text(server, "socketType") in {"SSL", "STARTTLS"}
    # What Thunderbird configures: the first server of each kind, implicit TLS, app password.
    assert thunderbird_choice(incoming[0], TB_AUTH_IN) == ("SSL", "password-cleartext")
    assert thunderbird_choice(outgoing[0], TB_AUTH_OUT) == ("SSL", "password-cleartext")

    # The user is told to create an application password, with the page's address.
    enable = provider.find("enable")
    assert enable is not None
    page = f"https://{HOST}:8444/compte/mots-de-passe-application"
    assert enable.get("visiturl") == page
    instruction = enable.find("instruction[@lang='fr']")
    assert instruction is not None and "mot de passe d'application" in (instruction.text or "")
    documentation = provider.find("documentation")
    assert documentation is not None and documentation.get("url") == page


def test_the_help_page_named_in_the_config_exists(client: FlaskClient) -> None:
    root = ET.fromstring(client.get(TB_URLS[0]).data)
    url = root.find("emailProvider/documentation").get("url")  # type: ignore[union-attr]
    page = client.get(url.split(":8444", 1)[1])
    assert page.status_code == 302 and "/connexion" in page.headers["Location"]  # log in first


def test_oauth2_is_offered_only_with_an_issuer(site: Settings) -> None:
    assert "OAuth2" not in authentications(site)
    with_psc = site.replace(oidc_issuer="https://auth.esw.esante.gouv.fr/auth/realms/x")
    assert authentications(with_psc) == ["password-cleartext", "OAuth2", "TLS-client-cert"]


def test_the_address_asked_about_is_never_written_back(client: FlaskClient) -> None:
    response = client.get(TB_URLS[1], query_string={"emailaddress": '"><x:evil/>@evil.fr'})
    assert response.status_code == 200 and b"evil" not in response.data


def parse_autodiscover(data: bytes) -> list[dict[str, str]]:
    root = ET.fromstring(data)
    assert root.tag == f"{{{NS_RESPONSE}}}Autodiscover"
    response = root.find(f"{{{NS_OUTLOOK}}}Response")
    assert response is not None
    account = response.find(f"{{{NS_OUTLOOK}}}Account")
    assert account is not None
    assert text(account, f"{{{NS_OUTLOOK}}}AccountType") == "email"
    assert text(account, f"{{{NS_OUTLOOK}}}Action") == "settings"
    return [{child.tag.split("}")[1]: child.text or "" for child in protocol}
            for protocol in account.findall(f"{{{NS_OUTLOOK}}}Protocol")]


@pytest.mark.parametrize("url", AD_URLS)
def test_autodiscover_gives_imap_and_smtp(client: FlaskClient, url: str) -> None:
    response = post_xml(client, outlook_request(f"Marie.Martin@{DOMAIN.upper()}"), url)
    assert response.status_code == 200, response.data  # no CSRF token, no session: answered
    assert_plain_xml_answer(response)
    protocols = parse_autodiscover(response.data)
    assert [(p["Type"], p["Server"], p["Port"], p["SSL"]) for p in protocols] == [
        ("IMAP", HOST, "9931", "on"), ("SMTP", HOST, "4651", "on")]
    for protocol in protocols:
        assert protocol["LoginName"] == f"marie.martin@{DOMAIN}"
        assert protocol["SPA"] == "off" and protocol["AuthRequired"] == "on"


def test_only_the_autodiscover_post_is_exempt_from_csrf(client: FlaskClient) -> None:
    """The same application refuses a form posted without its token: CSRF is on."""
    refused = client.post("/connexion", data={"identifier": "x", "password": "y"})
    assert refused.status_code == 400 and "Formulaire expiré" in refused.get_data(as_text=True)
    assert post_xml(client, outlook_request(f"marie@{DOMAIN}")).status_code == 200


def test_autodiscover_ignores_the_credentials_thunderbird_sends(
        client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    basic = "Basic bWFyaWVAaG9waXRhbC50ZXN0OlNlY3JldC1QYXNzd29yZA=="  # marie:Secret-Password
    response = post_xml(client, outlook_request(f"marie@{DOMAIN}"), Authorization=basic)
    assert response.status_code == 200
    assert "WWW-Authenticate" not in response.headers
    assert "Secret-Password" not in caplog.text and "bWFyaW" not in caplog.text


def test_autodiscover_tells_nothing_of_which_mailboxes_exist(web: Web) -> None:
    """On the shared trust space (Marie has a mailbox, nobody else below does): the same
    answer but for the login name written back."""
    client = web.client()
    domain = web.space.settings.domain
    known = post_xml(client, outlook_request(f"marie.martin@{domain}"))
    unknown = post_xml(client, outlook_request(f"personne.inconnue@{domain}"))
    assert known.status_code == unknown.status_code == 200
    assert known.data.replace(b"marie.martin", b"X") == unknown.data.replace(
        b"personne.inconnue", b"X")
    thunderbird = [client.get(TB_URLS[0], query_string={"emailaddress": address}).data
                   for address in (f"marie.martin@{domain}", f"personne.inconnue@{domain}")]
    assert thunderbird[0] == thunderbird[1]


def error_message(response) -> str:  # type: ignore[no-untyped-def]
    return text(ET.fromstring(response.data), f".//{{{NS_RESPONSE}}}Message")


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    root = ET.fromstring(response.data)
    assert root.tag == f"{{{NS_RESPONSE}}}Autodiscover"
    error = root.find(f"{{{NS_RESPONSE}}}Response/{{{NS_RESPONSE}}}Error")
    assert error is not None and error.get("Time") and error.get("Id")
    assert root.find(f".//{{{NS_OUTLOOK}}}Protocol") is None  # no settings with an error
    return text(error, f"{{{NS_RESPONSE}}}ErrorCode")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE Autodiscover [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Autodiscover><Request><EMailAddress>&lol9;@hopital.test</EMailAddress>
<AcceptableResponseSchema>%s</AcceptableResponseSchema></Request></Autodiscover>
""" % NS_OUTLOOK.encode()


def test_an_entity_bomb_is_refused_before_any_expansion(client: FlaskClient) -> None:
    started = time.monotonic()
    response = post_xml(client, BILLION_LAUGHS)
    assert time.monotonic() - started < 1
    assert response.status_code == 400 and error_code(response) == "600"
    assert "DTD" in error_message(response)  # refused at the DOCTYPE, not by expat's limits
    assert b"lollol" not in response.data and len(response.data) < 2000
    assert "Set-Cookie" not in response.headers


@pytest.mark.parametrize("doctype", [
    b'<!DOCTYPE Autodiscover [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
    b'<!DOCTYPE Autodiscover SYSTEM "http://127.0.0.1:9/evil.dtd">',
    b'<!DOCTYPE Autodiscover [<!ENTITY % p SYSTEM "file:///etc/hostname"> %p;]>',
])
def test_external_entities_are_refused(client: FlaskClient, doctype: bytes) -> None:
    body = outlook_request("&xxe;@hopital.test").replace(b"?>\n", b"?>\n" + doctype + b"\n", 1)
    response = post_xml(client, body)
    assert response.status_code == 400 and error_code(response) == "600"
    assert "DTD" in error_message(response)
    assert b"root:" not in response.data and b"xxe" not in response.data


@pytest.mark.parametrize(("address", "code"), [
    ("marie.martin@autre-operateur.test", "500"),
    (f"marie.martin@{DOMAIN}.evil.fr", "500"),
    (f"marie@evil.fr@{DOMAIN}", "600"),
    (f"<script>@{DOMAIN}", "600"),
    ("pas-une-adresse", "600"),
    ("a" * 65 + f"@{DOMAIN}", "600"),
])
def test_addresses_outside_the_domain_are_refused(client: FlaskClient, address: str,
                                                  code: str) -> None:
    body = outlook_request(address.replace("<", "&lt;"))
    response = post_xml(client, body)
    assert response.status_code == 400 and error_code(response) == code
    assert HOST.encode() not in response.data  # no settings, not even the server's name


@pytest.mark.parametrize(("body", "code"), [
    (b"<Autodiscover><Request>", "600"),  # not well-formed
    (b"", "600"),
    (b"<html><body>hello</body></html>", "600"),
    (outlook_request(f"marie@{DOMAIN}").replace(b"<AcceptableResponseSchema>", b"<Other>")
     .replace(b"</AcceptableResponseSchema>", b"</Other>"), "600"),
    (outlook_request(f"marie@{DOMAIN}", "http://schemas.microsoft.com/exchange/autodiscover/"
                                        "mobilesync/responseschema/2006"), "601"),
    (b"<Autodiscover>" + b"<a>" * 20 + b"</a>" * 20 + b"</Autodiscover>", "600"),
    (b"<Autodiscover><Request><EMailAddress>" + b"a" * 600 + b"</EMailAddress>"
     b"</Request></Autodiscover>", "600"),
])
def test_malformed_requests_get_a_precise_400(client: FlaskClient, body: bytes,
                                              code: str) -> None:
    response = post_xml(client, body)
    assert response.status_code == 400 and error_code(response) == code
    assert_plain_xml_answer(response)


def test_a_huge_body_is_refused_unread(client: FlaskClient) -> None:
    body = outlook_request(f"marie@{DOMAIN}") + b"<!--" + b"x" * (1024 * 1024) + b"-->"
    assert len(body) > MAX_BODY
    response = post_xml(client, body)
    assert response.status_code == 413 and error_code(response) == "600"
    assert_plain_xml_answer(response)


def test_get_on_the_autodiscover_route_is_405(client: FlaskClient) -> None:
    for url in AD_URLS:
        response = client.get(url)
        assert response.status_code == 405
        assert "Set-Cookie" not in response.headers
