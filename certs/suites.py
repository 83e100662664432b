"""TLS cipher suites shared by every listener that faces users (SMTP submission, IMAP).

One list so that the gateway (``gateway.smtp.tls``, Python's ``ssl``) and Dovecot
(``mailstore.config``, ``ssl_cipher_list``) cannot drift apart (issue #14: IMAP accepted
CBC-SHA1, ARIA and CAMELLIA while submission did not). TLS 1.2: forward secrecy (ECDHE) and
AEAD only (AES-GCM, ChaCha20-Poly1305) — ANSSI's TLS guide R5–R8, RFC 9325 §4.2. TLS 1.3:
its three standard AEAD suites (RFC 8446 §B.4; CCM suites are not enabled by OpenSSL).
"""

from __future__ import annotations

MODERN_TLS12_SUITES = ":".join((
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
))
TLS13_SUITES = ":".join((
    "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256",
))
