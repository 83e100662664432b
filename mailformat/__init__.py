"""Message formats, parsed in one place and without I/O (CONVENTIONS.md, 13): header sections
(``headers``), the ``Authentication-Results`` field (``authresults``), reply lines and their
enhanced status codes (``replies``), line ends (``lineends``). The gateway that checks and the
webmail that shows read messages through these modules only, so what is checked is what is
shown. Above ``core``, below everything that reads or writes messages."""
