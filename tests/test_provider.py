"""The TracerProvider: a user's SDK provider is reused, else one is created, and mode off sets none.

Each case runs ``_provider_scenario.py`` in its own process: the global provider can be
set only once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

_SCRIPT = Path(__file__).with_name("_provider_scenario.py")


def _run(scenario: str, cassette_dir: Path, **environment: str) -> dict[str, Any]:
    """The scenario's report; the process sees no TIMETRACER_* or OTEL_* variables but ``environment``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIMETRACER_", "OTEL_"))}
    result = subprocess.run(
        [sys.executable, str(_SCRIPT), scenario, str(cassette_dir)],
        env={**env, **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_existing_sdk_provider_is_reused(cassette_dir: Path) -> None:
    report = _run("user-provider", cassette_dir)
    assert report["status"] == 200
    assert report["is_users_provider"], "timetracer replaced the application's TracerProvider"
    assert ["GET /", "SERVER"] in report["users_spans"], "the user's processor lost the spans"
    assert report["cassette_services"] == ["users-service"]


@pytest.mark.parametrize(
    ("environment", "service"),
    [
        ({"TIMETRACER_SERVICE": "tt-service"}, "tt-service"),
        ({"OTEL_SERVICE_NAME": "otel-service"}, "otel-service"),
        ({"TIMETRACER_SERVICE": "tt-service", "OTEL_SERVICE_NAME": "otel-service"}, "tt-service"),
        (
            {"OTEL_RESOURCE_ATTRIBUTES": "service.name=attr-service,deployment.environment=test"},
            "attr-service",
        ),
        ({}, f"unknown_service:{os.path.basename(sys.executable)}"),  # the SDK's own default
    ],
    ids=["timetracer", "otel", "timetracer-wins", "otel-resource-attributes", "default"],
)
def test_without_a_provider_one_is_created_with_the_service_name(
    cassette_dir: Path, environment: dict[str, str], service: str
) -> None:
    report = _run("record", cassette_dir, **environment)
    assert (report["status"], report["provider"], report["provider_service"]) == (
        200,
        "TracerProvider",
        service,
    )
    assert report["cassette_services"] == [service]


def test_mode_off_sets_no_provider(cassette_dir: Path) -> None:
    report = _run("off", cassette_dir)
    assert report["status"] == 200
    assert report["provider"] == "ProxyTracerProvider"
    assert report["middleware"] == 0 and report["cassette_services"] == []
