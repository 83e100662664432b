"""Inscription: the wizard's pages (``views``, blueprint ``register``) and their forms
(``forms``). The operator's decision on a registration is ``webmail.operator.decision``."""
