"""Values an app's own modules draw when they are imported, before ``auto_setup`` runs: a
message broker's instance id (dramatiq's ``broker_id`` is a ``uuid4()``), the time the
settings were loaded, and a signing key made when none is configured."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime, timezone

INSTANCE = str(uuid.uuid4())
LOADED_AT = datetime.now(timezone.utc).isoformat()
SIGNING_KEY_ID = hashlib.sha256(secrets.token_bytes(32)).hexdigest()[:12]
