"""Settings, database, audit trail, logging and base errors."""
