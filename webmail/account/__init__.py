"""Mon compte: overview, password, preferences, application passwords and sessions
(``views``, blueprint ``account``), where the one-time code goes (``destinations``) and
« Rédaction » (``writing``), both routes of the same blueprint."""
