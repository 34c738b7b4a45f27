"""A small FastAPI service written the way open-source FastAPI backends are written
(modelled on ``fastapi/full-stack-fastapi-template``'s backend), for the record/replay
acceptance test (tests/test_real_service.py).

What makes it hard to replay is what makes it ordinary: SQLModel tables on PostgreSQL
(psycopg 3) with ``uuid4`` keys and Python-side timestamps, argon2 password hashes with
random salts, PyJWT access tokens carrying ``exp``, a Redis rate limit keyed by the hour
and a Redis cache of the item lists, a Redis ``PING`` and ``create_all`` at start-up, and
an exchange-rate API called with httpx. Configuration comes from the environment.

``real_service.main:app`` calls timetracer's ``auto_setup``; ``real_service.plain:app``
is the same service with no timetracer code, for ``opentelemetry-instrument``.
"""
