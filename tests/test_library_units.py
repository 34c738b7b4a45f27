"""One unit per library: the declaration in timetracer_otel.libraries is the only registration,
and record and replay share the protocol modules instead of importing each other."""

from __future__ import annotations

import ast
import importlib.util
from importlib.metadata import entry_points, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from timetracer_otel import plugins, protocols
from timetracer_otel.libraries import LIBRARIES

ROOT = Path(__file__).resolve().parent.parent
# package -> its directory (exporters/ and replayers/ are mapped into the package by pyproject)
PACKAGES = {
    "timetracer_otel.capture": ROOT / "timetracer_otel" / "capture",
    "timetracer_otel.replayers": ROOT / "replayers",
    "timetracer_otel.protocols": ROOT / "timetracer_otel" / "protocols",
}


def _imports(package: str, path: Path) -> set[str]:
    """Every module ``path`` (a module of ``package``) imports, relative imports resolved."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _imported_by(package: str) -> dict[str, set[str]]:
    return {path.name: _imports(package, path) for path in sorted(PACKAGES[package].glob("*.py"))}


def _within(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(package + "."))


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("timetracer_otel.capture", "timetracer_otel.replayers"),
        ("timetracer_otel.replayers", "timetracer_otel.capture"),
        ("timetracer_otel.protocols", "timetracer_otel.capture"),
        ("timetracer_otel.protocols", "timetracer_otel.replayers"),
    ],
)
def test_record_and_replay_never_import_each_other(package: str, forbidden: str) -> None:
    crossing = {
        name: _within(modules, forbidden)
        for name, modules in _imported_by(package).items()
        if _within(modules, forbidden)
    }
    assert crossing == {}


def test_protocol_modules_import_no_client_library() -> None:
    """Any cassette loads wherever timetracer does, whichever libraries are installed."""
    libraries = {"bson", *(library.name for library in LIBRARIES.values())}
    found = {
        name: sorted(m for m in modules if m.split(".")[0] in libraries)
        for name, modules in _imported_by("timetracer_otel.protocols").items()
    }
    assert {name: modules for name, modules in found.items() if modules} == {}


@pytest.mark.parametrize("name", LIBRARIES)
def test_each_declaration_names_modules_that_exist(name: str) -> None:
    library = LIBRARIES[name]
    assert library.name == name
    for module in (library.capture, library.replay):
        assert importlib.util.find_spec(module) is not None, module
        assert hasattr(importlib.import_module(module), "install"), module
    assert protocols.protocol_module(library.protocol) is not None
    for instrumentor in library.instrumentors:
        module, _, cls = instrumentor.partition(":")
        assert hasattr(importlib.import_module(module), cls)


def _pinned(requirement: Requirement) -> tuple[str, frozenset[str], str]:
    """A requirement without its environment marker (the package metadata gives each its extra)."""
    return requirement.name, frozenset(requirement.extras), str(requirement.specifier)


@pytest.mark.parametrize("name", LIBRARIES)
def test_each_declaration_agrees_with_the_package_extras(name: str) -> None:
    """The minimum versions declared are the ones pip installs with the library's extra."""
    library = LIBRARIES[name]
    in_extra = {
        _pinned(requirement)
        for requirement in map(Requirement, requires("timetracer-otel") or ())
        if requirement.marker is not None and requirement.marker.evaluate({"extra": library.extra})
    }
    applies_here = [
        requirement
        for requirement in map(Requirement, library.requires)
        if requirement.marker is None or requirement.marker.evaluate()
    ]  # httpx2 needs Python 3.11: on 3.10 neither side has it
    assert {_pinned(requirement) for requirement in applies_here} <= in_extra


def test_every_capture_module_belongs_to_a_declared_library() -> None:
    declared = {library.capture for library in LIBRARIES.values()}
    modules = {
        f"timetracer_otel.capture.{path.stem}"
        for path in PACKAGES["timetracer_otel.capture"].glob("*.py")
        # asgi: the inbound request, not a client library; _name: shared by several
        if path.stem != "asgi" and not path.stem.startswith("_")
    }
    assert modules == declared


def test_plugins_and_protocols_derive_from_the_declarations() -> None:
    assert plugins.PLUGINS == LIBRARIES
    assert protocols.PROTOCOLS == {library.protocol for library in LIBRARIES.values()}
    for name in LIBRARIES:
        for action in ("enable", "disable"):
            assert f"{action}_{name}" in plugins.__all__
            assert getattr(plugins, f"{action}_{name}").__name__ == f"{action}_{name}"


def test_timetracers_own_instrumentors_are_entry_points_for_opentelemetry_instrument() -> None:
    """``opentelemetry-instrument`` loads an instrumentor by its entry point: one timetracer
    brings (for a library OpenTelemetry has none for) must be registered like contrib's."""
    own = {
        instrumentor
        for library in LIBRARIES.values()
        for instrumentor in library.instrumentors
        if instrumentor.startswith("timetracer_otel.")
    }
    registered = {e.value for e in entry_points(group="opentelemetry_instrumentor")}
    assert own and own <= registered


@pytest.mark.parametrize("name", LIBRARIES)
def test_each_library_has_an_instrumentor_opentelemetry_instrument_finds(name: str) -> None:
    """``opentelemetry-instrument`` installs a library's capture with its instrumentor: a library
    without one recorded nothing there, its cassettes saying ``deps=none`` (aiomysql did)."""
    assert LIBRARIES[name].instrumentors
