"""What protection each recipient's copy will get, said before sending (issue #15 item 5).

"Chiffrer" encrypts what leaves the operator: a peer recipient's copy is encrypted end to end
to the certificate the directory publishes for them. A colleague of the same operator gets the
signed message in a mailbox that never leaves the operator's servers, so there is no hop to
encrypt. Rather than let a ticked box suggest more than that, the compose page lists, per
recipient, what will be done (``trust_space.policy.protection_of``, the gateway's rules), and
the Sent copy's delivery timeline says what was done.

``GET /courrier/<box>/protection?a=…&a=…&signer=1&chiffrer=1`` answers the same as JSON for
``static/protection.js``, which updates the list while the recipients are typed.
"""

from __future__ import annotations

from flask import jsonify, request
from werkzeug.wrappers import Response

from trust_space.policy import Protection, protection_of
from webmail.context import mss
from webmail.mail import bp
from webmail.mail.access import Box, Right, mailbox_route
from webmail.mail.drafting import policy_minimum, split_addresses

MAX_SHOWN = 50


def protections(to: str, cc: str, *, sign: bool, encrypt: bool) -> list[Protection]:
    """The protection of each readable address of the To and Cc fields (at most 50)."""
    s = mss().settings
    sign_min, encrypt_min = policy_minimum(s.security_policy)
    addresses = split_addresses(f"{to},{cc}")[0][:MAX_SHOWN]
    with mss().db.reading() as conn:
        return [protection_of(conn, a, {s.domain}, sign=sign or sign_min,
                              encrypt=encrypt or encrypt_min,
                              tls_only_peers=s.allow_tls_only_peers) for a in addresses]


@bp.get("/<int:box_id>/protection")
@mailbox_route(Right.SEND)
def protection(box: Box, folder: str) -> Response:
    """JSON: ``[{"address", "code", "text"}]`` for the addresses in ``a``."""
    found = protections(",".join(request.args.getlist("a"))[:5000], "",
                        sign=request.args.get("signer") == "1",
                        encrypt=request.args.get("chiffrer") == "1")
    return jsonify([{"address": p.address, "code": p.code, "text": p.text} for p in found])
