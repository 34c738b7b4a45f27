"""An app's own package holding a copy of an id generator (see :mod:`.uuid6`)."""
