"""Full-text search in the mail store: Dovecot's ``fts`` plugin with the Xapian backend
(Debian ``dovecot-fts-xapian``), configured by ``mailstore.config``.

What is indexed, per folder (one Xapian database per folder under the owner's
``sdbox/xapian-indexes/``):

- the header fields Subject, From, To, Cc, Bcc, Message-ID, List-ID;
- every ``text/*`` body part (``text/plain`` as is, ``text/html`` through Dovecot's HTML
  parser), inline or attached;
- attachments' text through ``decode2text.sh``, written beside ``dovecot.conf`` (Debian ships
  no decoder): PDF with ``pdftotext`` (poppler-utils); OpenDocument text (``.odt``) and Word
  (``.docx``) with ``unzip`` and Dovecot's ``xml2text`` when ``unzip`` is there; nothing else
  (images, spreadsheets, old ``.doc``: their file name is not indexed either).

How Xapian 1.5.5 matches (``fts-backend-xapian-functions.cpp``): text is lower-cased and its
accents removed (ICU ``NFD; [:M:] Remove; NFC``) both when indexing and when searching, so
``echographie`` finds « échographie » and the other way round; every word is indexed with its
3- to 40-character pieces (``partial``, ``full``), so a word finds longer words that contain
it (``cardio`` finds « cardiologie », as IMAP's substring SEARCH promises, RFC 3501 §6.4.4).
A header keeps its hyphens inside words (« Compte-rendu-Dupont-9d2e » is one word, found by
any piece of it), hence ``full=40``, the most 1.5.5 accepts (above, it logs an error and
keeps 20): with 20, a piece of more than 20 characters of such a subject found only the
whole word (issue #17). Measured on 300 messages of bench/search_corpus: index size +0.3 %,
indexing time unchanged; subjects made only of 40-character hyphenated words: +77 % size,
+50 % time. Messages indexed before the change keep their 20-character pieces until
``doveadm fts rescan`` (Dovecot does not notice the setting changed). Words of fewer than
3 characters are dropped from a query: a query made of them only matches nothing, so the
webmail refuses it (``webmail.mail.search``). Several words must all be found (AND), in any
order and place.

``fts_enforced = yes``: a SEARCH that the index cannot answer fails instead of silently
reading every message (Dovecot 2.3 ``fts-storage.c``: ``yes`` also waits for the indexer to
catch up on messages not indexed yet; ``body`` would enforce body searches only): a folder
whose index cannot be opened makes the search fail (NO [SERVERBUG]). What it does not cover,
seen in tests/test_webmail_search.py: when the index can be read but not written, indexing
fails without Dovecot noticing, and the messages not indexed yet are searched by reading them.
The ``search_read_mail`` metric counts every message a SEARCH opens (``doveadm stats dump``):
0 while the index answers, which bench/search.py checks over all its searches.
``fts_autoindex = yes``: each delivery or APPEND queues the folder for the indexer, so a
search rarely waits.

Limits of fts-xapian 1.5.5 (Debian 12), measured at 100,000 messages (bench/search.py):
indexing takes some 20-60 messages a second per process (a bulk import is indexed in the
background for a while); a lookup costs in proportion to the documents it finds (it reads its
matches 100 at a time, each page from the start), so a name found in 20,000 messages takes
seconds where a rare word takes tens of milliseconds.

Who searches through the index: the webmail's IMAP sessions only. The configuration loads
the plugins (``PLUGINS``) in LMTP, the indexer and doveadm, which keep the index; the userdb
gives them to an IMAP session opened by the webmail's master login
(``mailstore.sql.user_query``, ``mailstore.config.WEBMAIL_IMAP_PLUGINS``). A client logging in
as itself (password, card, token: a practice software, Thunderbird) searches without it and
gets RFC 3501's answers, reading the messages (Dovecot's cache helps for headers), because of
what follows.

Where SEARCH through the index departs from RFC 3501 §6.4.4 (tests/test_mailstore_search.py;
the webmail's queries are built around it, webmail.mail.fulltext): fts-xapian marks every HEADER,
BODY and TEXT criterion answered (``fts_backend_xapian_build_qs`` sets ``match_always``) even
when it could not turn it into a query, and Dovecot 2.3.19 takes that answer as final
(``fts-storage.c``); no setting changes this (``fts_header_excludes``/``fts_header_includes``
only choose what is indexed, ``fts-build-mail.c``). So: a header field it does not index
(only Subject, From, To, Cc, Bcc, Message-ID and List-ID are; not Content-Type, In-Reply-To,
X-…) matches nothing, and ANDed with another criterion it is silently dropped; an empty value
or words under 3 characters match nothing; a search with such a criterion under ``NOT``
matches nothing; a hyphen in a BODY query matches nothing (the body's words are split at
hyphens, the query's are not); a piece of more than 40 characters of a longer word matches
nothing, nor does a piece of a Message-ID (only its whole parts between ``<@.>`` are
indexed). mss's own searches on such fields go without the plugins (``doveadm -o
mail_plugins=…``, ``mailstore.config.BASE_PLUGINS``) or read the fields
(webmail.mail.threads). A new message is found by the next SEARCH of a session that knows of
it (``fts_enforced`` brings the index up to date first); a session selected before the
delivery learns of it with NOOP, as without the index (RFC 3501 §7.4.1).
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGINS = "fts fts_xapian"  # Dovecot's mail_plugins of the sessions that keep or use the index
DECODER_FILE = "decode2text.sh"
DECODER_SOCKET = "decode2text"  # in base_dir; fts_decoder names it relative to it
XML2TEXT = "/usr/lib/dovecot/xml2text"
SCAN_METRIC = "search_read_mail"
PARTIAL = 3  # shortest piece of a word indexed, shortest query word (webmail.mail.fulltext)
FULL = 40  # longest piece of a word indexed: the most fts-xapian 1.5.5 accepts

# Dovecot's fts "script" protocol (fts-parser-script.c): run with no argument, the script
# lists "<content-type> <extension>..." lines ended by an empty line; run with a content
# type, it gets the attachment on stdin and writes its text (UTF-8) to stdout. The script
# service kills it after 10 s (alarm=10). Output is capped: an attachment's text beyond
# 2 MB adds nothing a search needs and would only grow the index.
DECODER_SCRIPT = f"""\
#!/bin/sh
# Written by mss (mailstore/fts.py): attachments' text for Dovecot's full-text index.
content_type="$1"
formats='application/pdf pdf
application/x-pdf pdf
application/vnd.oasis.opendocument.text odt
application/vnd.openxmlformats-officedocument.wordprocessingml.document docx
'
if [ -z "$content_type" ]; then
  printf '%s\\n' "$formats"
  exit 0
fi
LC_ALL=C.UTF-8
export LC_ALL
cap() {{ head -c 2097152; }}
case "$content_type" in
  application/pdf|application/x-pdf)
    pdftotext -q -enc UTF-8 - - 2>/dev/null | cap ;;
  application/vnd.oasis.opendocument.text|application/vnd.openxmlformats-officedocument.wordprocessingml.document)
    command -v unzip >/dev/null || exit 0
    tmp=$(mktemp) || exit 1
    trap 'rm -f "$tmp"' 0 1 2 3 14 15
    head -c 52428800 > "$tmp"
    unzip -p "$tmp" content.xml word/document.xml 2>/dev/null | head -c 20971520 \\
      | {XML2TEXT} | cap ;;
  *) echo "type non pris en charge : $content_type" >&2; exit 1 ;;
esac
exit 0
"""


def plugin_settings() -> str:
    """The ``plugin {{}}`` lines of full-text search (module docstring)."""
    return f"""\
  fts = xapian
  fts_xapian = partial={PARTIAL} full={FULL} verbose=0
  fts_autoindex = yes
  fts_enforced = yes
  fts_decoder = {DECODER_SOCKET}
"""


def services(conf_dir: Path, mail_user: str, *, privileged: bool) -> str:
    """The indexer worker's memory and the attachment decoder's service.

    Xapian commits to disk whenever less than 250 MB seem free under the process's address
    space limit (``lowmemory``), so the worker needs more than Dovecot's 256 MB default or it
    commits after every message. The decoder runs as Dovecot's internal user (never the
    mail user: it parses attachments from anyone); only the mail user may connect to it."""
    user = "  user = $default_internal_user\n" if privileged else ""
    return f"""\
service indexer-worker {{
  vsz_limit = 2G
}}
# Messages a SEARCH had to open and read (reason "search", lib-storage's mail_opened event):
# with the index answering, none. ``doveadm stats dump`` shows the count (bench/search.py).
metric {SCAN_METRIC} {{
  filter = event=mail_opened AND reason=search
}}
service {DECODER_SOCKET} {{
  executable = script {conf_dir / DECODER_FILE}
{user}  unix_listener {DECODER_SOCKET} {{
    mode = 0600
    user = {mail_user}
  }}
}}
"""


def write_decoder(conf_dir: Path) -> Path:
    """Write ``decode2text.sh`` (readable and executable by Dovecot's users)."""
    path = conf_dir / DECODER_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(DECODER_SCRIPT)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path
