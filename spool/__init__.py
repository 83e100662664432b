"""The durable queue and the delivery timeline (DESIGN.md, life of a message, steps 4-5).

``models``: the tables (messages, recipients, timeline, de-duplication ledger); ``queue``:
enqueue before 250, claim, record outcomes, administer; ``events``: the timeline's and the
relay audit's vocabulary. The gateway writes here, the webmail and ``mss`` read; this package
imports ``core`` only (no sockets, no gateway, webmail or mail store).
"""
