"""Mail client autoconfiguration (référentiel #2 Clients, ECO.1.1.9): what a mail client or a
practice software needs to find the IMAP and submission servers from an address alone.

- **Thunderbird autoconfig** (``clientConfig`` version 1.1): ``GET
  /.well-known/autoconfig/mail/config-v1.1.xml`` and ``GET /mail/config-v1.1.xml`` (the URL
  Thunderbird asks first, at ``https://autoconfig.<domain>/``, with ``?emailaddress=``). The
  document is shaped on what Thunderbird actually reads (comm-central
  ``mail/components/accountcreation/modules/readFromXML.sys.mjs``; Thunderbird for Android
  ``RealAutoconfigParser.kt``): each server takes the *first* ``<authentication>`` value its
  client knows, so ``password-cleartext`` (an application password, always inside TLS) comes
  first, then ``OAuth2`` (Pro Santé Connect tokens, only when configured) and
  ``TLS-client-cert`` (SASL EXTERNAL) for the clients that offer them.
- **Microsoft Autodiscover, POX** (MS-OXDSCLI): ``POST /autodiscover/autodiscover.xml`` (and the
  capitalised path Outlook also uses) with an ``<Autodiscover><Request><EMailAddress>``; the
  answer lists one IMAP and one SMTP server, implicit TLS (RFC 8314): Autodiscover's ``SSL on``
  cannot say STARTTLS, and Thunderbird reads it as implicit TLS on any non-standard port.

Both answers come from the settings alone — never from the directory: every address of the
domain gets the same servers, so nothing tells whether a mailbox exists. The request is parsed
with expat with any DTD refused before its internal subset is read (no entity expansion, no
external entity: billion laughs and XXE), in a body of at most ``MAX_BODY`` bytes. No log-in,
no session, no CSRF token (a mail client posts XML, not a form): the routes show server names
and ports only.
"""

from __future__ import annotations

import logging
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urljoin
from xml.etree import ElementTree as ET
from xml.parsers import expat

from flask import Blueprint, Flask, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response

from core.settings import Settings
from webmail.context import mss
from webmail.errors import WebmailError
from webmail.security import csrf

log = logging.getLogger("mss.webmail")
bp = Blueprint("autoconfig", __name__)

XML_TYPE = "application/xml; charset=utf-8"
MAX_BODY = 16 * 1024  # an Outlook or Thunderbird request is about 400 bytes
_MAX_DEPTH, _MAX_ELEMENTS, _MAX_FIELD = 8, 64, 512
NS_RESPONSE = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
NS_OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
# A dot-atom local part (RFC 5322 §3.2.3), as mailbox addresses are made (ASCII only).
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(frozen=True)
class Server:
    """One way in for a mail client: ``kind`` imap / smtp, ``socket`` SSL (implicit TLS) or
    STARTTLS — Thunderbird's ``socketType`` values."""

    kind: str
    port: int
    socket: str


def servers(settings: Settings) -> list[Server]:
    """IMAP and submission, implicit TLS first (RFC 8314 prefers it to STARTTLS). A port set
    to 0 is not offered."""
    offered = [Server("imap", settings.imaps_port, "SSL"),
               Server("imap", settings.imap_port, "STARTTLS"),
               Server("smtp", settings.submissions_port, "SSL"),
               Server("smtp", settings.submission_port, "STARTTLS")]
    return [server for server in offered if server.port > 0]


def authentications(settings: Settings) -> list[str]:
    """Thunderbird's names of the methods IMAP and submission accept, the one every client
    can use first: an application password over TLS, then Pro Santé Connect tokens (OAUTHBEARER /
    XOAUTH2, when an issuer is configured) and a client certificate (SASL EXTERNAL)."""
    methods = ["password-cleartext"]
    if settings.oidc_issuer:
        methods.append("OAuth2")
    methods.append("TLS-client-cert")
    return methods


def _text(parent: ET.Element, tag: str, text: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def _document(root: ET.Element) -> bytes:
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{text}\n'.encode()


def thunderbird_config(settings: Settings, help_url: str) -> bytes:
    """The ``clientConfig`` document (Thunderbird autoconfig, version 1.1). ``help_url``: the
    webmail page where an application password is created."""
    root = ET.Element("clientConfig", version="1.1")
    provider = ET.SubElement(root, "emailProvider", id=settings.domain)
    _text(provider, "domain", settings.domain)
    _text(provider, "displayName", settings.operator_name)
    _text(provider, "displayShortName", settings.domain)
    for server in servers(settings):
        tag = "incomingServer" if server.kind == "imap" else "outgoingServer"
        element = ET.SubElement(provider, tag, type=server.kind)
        _text(element, "hostname", settings.hostname)
        _text(element, "port", str(server.port))
        _text(element, "socketType", server.socket)
        _text(element, "username", "%EMAILADDRESS%")
        for method in authentications(settings):
            _text(element, "authentication", method)
    # "enable": what a user must do before IMAP/SMTP works (the wiki's ConfigFileFormat).
    enable = ET.SubElement(provider, "enable", visiturl=help_url)
    _text(enable, "instruction", "Le mot de passe du webmail ne fonctionne pas ici : créez un "
          "mot de passe d'application dans Mon compte, puis saisissez-le dans ce logiciel.",
          lang="fr")
    _text(enable, "instruction", "The webmail password does not work here: create an "
          "application password in Mon compte and type it in this program.", lang="en")
    documentation = ET.SubElement(provider, "documentation", url=help_url)
    _text(documentation, "descr", "Mots de passe d'application et réglages IMAP/SMTP",
          lang="fr")
    _text(documentation, "descr", "Application passwords and IMAP/SMTP settings", lang="en")
    return _document(root)


class AutodiscoverRefused(WebmailError):
    """An Autodiscover request answered with an MS-OXDSCLI error, never with settings:
    ``error_code`` 600 invalid request, 601 response schema not provided, 500 an address this
    operator does not serve."""

    code = "autodiscover_refused"

    def __init__(self, message: str, *, error_code: int = 600, status: int = 400) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


def _refuse_dtd(*_args: object) -> None:
    # Any DOCTYPE: its internal subset is where entity bombs and external entities live.
    raise AutodiscoverRefused("Requête invalide : DTD refusée / DTD not allowed")


class _RequestReader:
    """expat callbacks keeping the text of ``Autodiscover/Request/*`` (local names)."""

    def __init__(self) -> None:
        self.path: list[str] = []
        self.fields: dict[str, str] = {}
        self.elements = 0

    def start(self, name: str, _attrs: object) -> None:
        self.elements += 1
        local = name.rpartition(" ")[2]
        if self.elements > _MAX_ELEMENTS or len(self.path) >= _MAX_DEPTH:
            raise AutodiscoverRefused("Requête invalide : XML trop imbriqué / XML too deep")
        if not self.path and local != "Autodiscover":
            raise AutodiscoverRefused("Requête invalide : élément Autodiscover attendu")
        self.path.append(local)

    def end(self, _name: str) -> None:
        self.path.pop()

    def text(self, data: str) -> None:
        if len(self.path) != 3 or self.path[:2] != ["Autodiscover", "Request"]:
            return
        value = self.fields.get(self.path[2], "") + data
        if len(value) > _MAX_FIELD:
            raise AutodiscoverRefused("Requête invalide : champ trop long / field too long")
        self.fields[self.path[2]] = value


def parse_request(body: bytes) -> tuple[str, str]:
    """The ``EMailAddress`` and ``AcceptableResponseSchema`` of an Autodiscover request.

    Raises:
        AutodiscoverRefused: not well-formed XML, a DTD, not an Autodiscover request, or a
            missing field (error code 600).
    """
    reader = _RequestReader()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.StartElementHandler = reader.start
    parser.EndElementHandler = reader.end
    parser.CharacterDataHandler = reader.text
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code)
        raise AutodiscoverRefused(f"Requête invalide : XML mal formé ({reason}) / malformed XML"
                                  ) from None
    address = reader.fields.get("EMailAddress", "").strip()
    schema = reader.fields.get("AcceptableResponseSchema", "").strip()
    if not address or not schema:
        raise AutodiscoverRefused("Requête invalide : EMailAddress et AcceptableResponseSchema "
                                  "sont requis / EMailAddress and AcceptableResponseSchema "
                                  "are required")
    return address, schema


def served_address(settings: Settings, address: str, schema: str) -> str:
    """The address, lower-cased, when this operator answers for it with ``schema``.

    Raises:
        AutodiscoverRefused: 601 for another response schema (e.g. ActiveSync's), 600 for
            something that is not an address, 500 for an address of another domain.
    """
    if schema != NS_OUTLOOK:
        raise AutodiscoverRefused("Schéma de réponse non fourni / Response schema not available",
                                  error_code=601)
    local, at, domain = address.rpartition("@")
    if not at or len(address) > 254 or len(local) > 64 or not _LOCAL.fullmatch(local):
        raise AutodiscoverRefused("Adresse invalide / Invalid address")
    if domain.lower() != settings.domain.lower():
        raise AutodiscoverRefused("Adresse hors du domaine de cet opérateur / The e-mail "
                                  "address cannot be found", error_code=500)
    return address.lower()


def autodiscover_settings(settings: Settings, address: str) -> bytes:
    """The POX answer (MS-OXDSCLI): an ``email`` account with one IMAP and one SMTP server."""
    root = ET.Element("Autodiscover", xmlns=NS_RESPONSE)  # default namespaces, no prefixes:
    response = ET.SubElement(root, "Response", xmlns=NS_OUTLOOK)  # what clients compare
    account = ET.SubElement(response, "Account")
    _text(account, "AccountType", "email")
    _text(account, "Action", "settings")
    for server in servers(settings):
        if server.socket != "SSL":
            continue
        protocol = ET.SubElement(account, "Protocol")
        _text(protocol, "Type", server.kind.upper())
        _text(protocol, "Server", settings.hostname)
        _text(protocol, "Port", str(server.port))
        _text(protocol, "LoginName", address)
        _text(protocol, "DomainRequired", "off")
        _text(protocol, "SPA", "off")  # no NTLM: an application password inside TLS
        _text(protocol, "SSL", "on")
        _text(protocol, "AuthRequired", "on")
        if server.kind == "smtp":
            _text(protocol, "UsePOPAuth", "off")
            _text(protocol, "SMTPLast", "off")
    return _document(root)


def autodiscover_error(settings: Settings, error: AutodiscoverRefused) -> bytes:
    """An MS-OXDSCLI error answer (``Response`` in the response schema's own namespace)."""
    root = ET.Element("Autodiscover", xmlns=NS_RESPONSE)
    response = ET.SubElement(root, "Response")
    now = datetime.now(UTC).strftime("%H:%M:%S.%f")
    server_id = str(zlib.crc32(settings.hostname.encode()))  # the spec's "hash of the server"
    element = ET.SubElement(response, "Error", Time=now, Id=server_id)
    _text(element, "ErrorCode", str(error.error_code))
    _text(element, "Message", error.message)
    ET.SubElement(element, "DebugData")
    return _document(root)


def _xml(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type=XML_TYPE)


@bp.get("/.well-known/autoconfig/mail/config-v1.1.xml")
@bp.get("/mail/config-v1.1.xml")
def thunderbird() -> Response:
    """Thunderbird's autoconfig. ``?emailaddress=`` is not read: the answer is the same for
    every address (and nothing the client sent is written back)."""
    app_passwords = urljoin(mss().url, url_for("account.app_password_list"))
    return _xml(thunderbird_config(mss().settings, app_passwords))


@bp.post("/autodiscover/autodiscover.xml")
@bp.post("/Autodiscover/Autodiscover.xml")
def autodiscover() -> Response:
    """Microsoft Autodiscover (POX). An ``Authorization`` header (Thunderbird sends the user's
    credentials) is neither read nor logged."""
    settings = mss().settings
    request.max_content_length = MAX_BODY
    try:
        try:
            body = request.get_data(cache=False)
        except RequestEntityTooLarge:
            raise AutodiscoverRefused(f"Requête trop volumineuse (au plus {MAX_BODY} octets) / "
                                      "Request too large", status=413) from None
        address = served_address(settings, *parse_request(body))
    except AutodiscoverRefused as exc:
        log.info("autodiscover refusé : %s (%s)", exc.error_code, exc.status)
        return _xml(autodiscover_error(settings, exc), exc.status)
    return _xml(autodiscover_settings(settings, address))


def init_app(app: Flask) -> None:
    """Register the routes; the Autodiscover POST is exempt from CSRF (a client's XML)."""
    app.register_blueprint(bp)
    csrf.exempt(autodiscover)
