"""Personal contacts and groups (issue #17): each professional's own address book, beside the
trust space's directory. ``models`` holds the tables, ``book`` the rules (trust-space addresses
only, bounds, vCard in and out, suggestions), ``views`` the pages under ``/contacts``."""
