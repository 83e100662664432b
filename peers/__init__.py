"""The peer operators' health, as data: the probe's results (``results``), their storage
(``health``) and the traffic with each peer read from the queue and the audit trail
(``traffic``). Below the gateway and the webmail, which both read it; the probe itself
(network) is ``gateway.probe``.
"""
