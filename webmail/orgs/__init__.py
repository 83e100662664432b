"""Boîtes organisationnelles: their collaborators and roles (``views``, blueprint ``orgs``)."""
