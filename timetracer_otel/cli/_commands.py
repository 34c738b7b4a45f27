"""The ``timetracer`` commands (click). Each is a thin layer over the modules beside it."""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from timetracer_otel import __version__
from timetracer_otel._terminal import printable, printable_json
from timetracer_otel.cassette.location import CassetteFile, TooLarge, is_url, read_bytes
from timetracer_otel.cassette.reader import (
    CassetteError,
    cassette_files,
    load_cassette,
    process_cassette_files,
    scope_of,
    validate_document,
)
from timetracer_otel.cassette.storage import replace
from timetracer_otel.config import COMPRESSIONS, ReadLimits, TraceConfig

from . import _render
from .diff import DEFAULT_IGNORED, diff_cassettes, environment_sealer
from .index import CassetteIndex, listing
from .order import ORDERS, in_order, new_seed
from .query import SORT_KEYS, Filters, select
from .search import matches

_DIFFERENT = 1  # exit status: the cassettes (or the replayed response) differ; search found nothing
_FAILED = 2  # exit status: bad usage or an unusable cassette, as click's usage errors
_PORTS_TRIED = 100  # when the port asked for is taken: how many after it to look for a free one


class _Failure(click.ClickException):
    """The one line a command fails with; what it quotes (file names, recorded values) is escaped."""

    exit_code = _FAILED

    def __init__(self, message: str, multiline: bool = False) -> None:
        super().__init__(printable(message, multiline))


def _limits() -> ReadLimits:
    try:
        return ReadLimits.from_env()
    except ValueError as exc:
        raise _Failure(str(exc)) from None


def _dir_option(function: Callable) -> Callable:
    return click.option(
        "-d", "--dir", "directory", default="./cassettes", envvar="TIMETRACER_DIR", show_default=True,
        type=click.Path(file_okay=True, dir_okay=True), help="The cassette directory (or TIMETRACER_DIR).",
    )(function)  # fmt: skip


def _filter_options(function: Callable) -> Callable:
    """The filters of ``list`` and ``search``, passed on as one :class:`Filters` named ``filters``."""
    options = [
        click.option(
            "--method", "methods", multiple=True, help="Request method; repeat for several."
        ),
        click.option("--path", help="Glob on the request path, e.g. '/users/*'."),
        click.option("--route", help="Glob on the route template, e.g. '/users/{name}'."),
        click.option(
            "--status", "statuses", multiple=True, help="404, 5xx or 400-499; repeat for several."
        ),
        click.option(
            "--errors", is_flag=True, help="Only failed requests: status 5xx or an exception."
        ),
        click.option(
            "--since",
            help="Recorded at or after: 2026-01-22, 2026-01-22T09:00, or 30m / 2h / 7d ago.",
        ),
        click.option("--until", help="Recorded before (same forms as --since)."),
        click.option(
            "--service", "services", multiple=True, help="Service name; repeat for several."
        ),
    ]

    @functools.wraps(function)
    def wrapper(**kwargs: Any) -> Any:
        names = ("methods", "path", "route", "statuses", "errors", "since", "until", "services")
        try:
            filters = Filters(**{name: kwargs.pop(name) for name in names})
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return function(filters=filters, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def _json_option(function: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(
        function
    )


def _print_json(value: Any) -> None:
    sys.stdout.write(
        printable_json(json.dumps(value, indent=2, ensure_ascii=False, default=str)) + "\n"
    )


def _no_directory(directory: str) -> str | None:
    """Why ``directory`` cannot be listed, when it is a local path that is no directory."""
    if is_url(directory) or Path(directory).is_dir():
        return None
    what = "is a file, not a directory" if Path(directory).exists() else "does not exist"
    return f"the cassette directory {directory} {what}: name one with --dir DIR or TIMETRACER_DIR"


def _index(directory: str, limits: ReadLimits) -> CassetteIndex:
    """The index of ``directory``, current; its unusable files named on stderr, each with its reason."""
    problem = _no_directory(directory)
    if problem is not None:
        raise _Failure(f"timetracer: {problem}")
    try:
        index = CassetteIndex(directory, limits).refresh()
    except CassetteError as exc:
        raise _Failure(str(exc)) from None
    if index.problems:
        click.echo(f"timetracer: {len(index.problems)} file(s) are not usable cassettes:", err=True)
        for key, problem in sorted(index.problems.items()):
            click.echo(printable(f"  {key}: {problem}"), err=True)
    return index


def _names_a_file(reference: str) -> bool:
    return os.sep in reference or reference.endswith((".json", ".json.gz"))


def _resolve(reference: str, directory: str, limits: ReadLimits) -> CassetteFile:
    """A cassette file: ``reference`` itself when it is a URL or exists, else a key, id or name prefix in ``directory``."""
    if is_url(reference):
        return reference
    if Path(reference).exists():
        return Path(reference)
    problem = _no_directory(directory)
    if problem is not None:
        if _names_a_file(reference):
            raise _Failure(str(CassetteError(reference, "no such file")))
        raise _Failure(f"timetracer: {reference!r} is no file, and {problem}")
    index = _index(directory, limits)
    found = index.find(reference)
    if not found and _names_a_file(reference):
        raise _Failure(
            str(
                CassetteError(
                    reference, f"no such file, nor a cassette of that name in {directory}"
                )
            )
        )
    unusable = index.find_unusable(reference) if not found else []
    if len(unusable) == 1:  # named, but not a cassette replay or show can read
        raise _Failure(str(unusable[0]))
    processes = [] if found else _process_cassettes_named(reference, directory)
    if len(processes) == 1:
        return processes[0]
    if len(found) != 1:
        problem = (
            "matches no cassette"
            if not found
            else f"matches {len(found)} cassettes: {', '.join(sorted(found)[:5])}"
        )
        raise _Failure(f"{reference!r} {problem} in {directory}")
    path = index.path_of(found[0])
    assert path is not None  # found keys come from the same scan
    return path


def _process_cassettes_named(reference: str, directory: str) -> list[CassetteFile]:
    """The process cassettes in ``directory`` whose id or file name starts with ``reference``."""
    return [
        file
        for file in process_cassette_files(directory)
        if (name := Path(str(file)).name).startswith(reference)
        or name.rsplit("__", 1)[-1].startswith(reference)
    ]


def _location(reference: str, directory: str, limits: ReadLimits) -> CassetteFile:
    """What ``reference`` names: a directory or URL prefix as it is, else one cassette as for ``show``."""
    return (
        reference
        if is_url(reference) or Path(reference).is_dir()
        else _resolve(reference, directory, limits)
    )


def _cassettes(reference: str, directory: str, limits: ReadLimits) -> list[CassetteFile]:
    """The cassettes ``reference`` names: a directory or URL prefix (all below it), else one cassette as for ``show``."""
    return _cassettes_at(_location(reference, directory, limits))


def _cassettes_at(target: CassetteFile) -> list[CassetteFile]:
    """The cassettes at ``target``: all below a directory or URL prefix, else ``target`` itself."""
    try:
        paths = cassette_files(target)
    except CassetteError as exc:
        raise _Failure(str(exc)) from None
    if not paths:
        raise _Failure(f"{target} holds no cassettes")
    return paths


def _load(path: CassetteFile, limits: ReadLimits, scope: str = "request") -> dict[str, Any]:
    try:
        return load_cassette(path, scope, limits)
    except CassetteError as exc:
        raise _Failure(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="timetracer")
def cli() -> None:
    """Find, inspect, diff and replay timetracer cassettes."""


@cli.command("list")
@click.argument("location", required=False, type=click.Path(file_okay=True, dir_okay=True))
@_dir_option
@_filter_options
@click.option(
    "--sort",
    type=click.Choice(list(SORT_KEYS)),
    default="recorded_at",
    show_default=True,
    help="Sort by this column.",
)
@click.option("--desc", is_flag=True, help="Sort in descending order.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
@_json_option
def list_command(
    location: str | None,
    directory: str,
    filters: Filters,
    sort: str,
    desc: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """List the cassettes in a directory (LOCATION, else --dir), filtered and sorted."""
    index = _index(location or directory, _limits())
    rows = select(index.entries.values(), filters, sort, desc, limit)
    if as_json:
        _print_json([listing(row) for row in rows])
        return
    sys.stdout.write("\n".join(_render.list_lines(rows)) + "\n")
    click.echo(f"{len(rows)} of {len(index.entries)} cassettes", err=True)


@cli.command()
@click.argument("cassette")
@_dir_option
@click.option(
    "--payloads", is_flag=True, help="Show every body in full, and each call's headers and bodies."
)
@click.option("--json", "as_json", is_flag=True, help="Print the cassette document.")
def show(cassette: str, directory: str, payloads: bool, as_json: bool) -> None:
    """Show a cassette: request, response, calls, spans.

    The spans are drawn as a waterfall; --payloads adds every call's headers and bodies.
    CASSETTE is a file, or a cassette id, key or file-name prefix in --dir. A process
    cassette (the calls made outside requests) shows its calls and spans.
    """
    limits = _limits()
    path = _resolve(cassette, directory, limits)
    doc = _load(path, limits, scope_of(path))
    if as_json:
        _print_json(doc)
        return
    _render.show(_render.console(), doc, str(path), payloads, limits.show_body_bytes)


@cli.command()
@click.argument("a")
@click.argument("b")
@_dir_option
@click.option("--ignore", multiple=True, metavar="FIELD",
              help="A header or JSON field to leave out (any depth), or a location such as response.body; repeat for several.")  # fmt: skip
@click.option(
    "--no-default-ignores", is_flag=True, help=f"Compare {', '.join(DEFAULT_IGNORED)} headers too."
)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def diff(
    a: str, b: str, directory: str, ignore: tuple[str, ...], no_default_ignores: bool, as_json: bool
) -> None:
    """Compare two cassettes; exit status 1 if they differ.

    The request, the response and each call are compared field by field.
    """
    limits = _limits()
    path_a, path_b = _resolve(a, directory, limits), _resolve(b, directory, limits)
    ignored = (*(() if no_default_ignores else DEFAULT_IGNORED), *ignore)
    found = diff_cassettes(
        _load(path_a, limits), _load(path_b, limits), ignored, environment_sealer()
    )
    if as_json:
        _print_json(
            {"a": str(path_a), "b": str(path_b), "differences": [d.to_dict() for d in found]}
        )
    else:
        _render.differences(_render.console(), found, str(path_a), str(path_b))
    sys.exit(_DIFFERENT if found else 0)


def _found_in(path: CassetteFile, text: str, case_sensitive: bool, limits: ReadLimits) -> list[str]:
    """Where ``text`` stands in the cassette at ``path``; nowhere if it changed since the scan."""
    try:
        return matches(
            load_cassette(path, limits=limits, scope=scope_of(path)), text, case_sensitive
        )
    except CassetteError:
        return []


@cli.command()
@click.argument("text")
@click.argument("location", required=False, type=click.Path(file_okay=True, dir_okay=True))
@_dir_option
@_filter_options
@click.option("--case-sensitive", is_flag=True, help="Match case exactly.")
@_json_option
def search(
    text: str,
    location: str | None,
    directory: str,
    filters: Filters,
    case_sensitive: bool,
    as_json: bool,
) -> None:
    """Find cassettes (in LOCATION, else --dir) that contain TEXT; exit status 1 if none does, as grep's.

    Searches everything a cassette holds: the headers, bodies and URLs of the request, the
    response and every call, and the spans, errors and draws; the process cassettes too
    (the calls made outside requests) unless a filter is given.
    """
    limits = _limits()
    directory = location or directory
    index = _index(directory, limits)
    found = []
    for entry in select(index.entries.values(), filters):
        path = index.path_of(entry["key"])
        places = _found_in(path, text, case_sensitive, limits) if path is not None else []
        if places:
            found.append({**listing(entry), "matches": places})
    processes = process_cassette_files(directory) if filters.keeps_everything else []
    in_processes = [
        {"process_cassette": str(path), "matches": places}
        for path in processes
        if (places := _found_in(path, text, case_sensitive, limits))
    ]
    if as_json:
        _print_json([*found, *in_processes])
    else:
        out = []
        if found:
            header, *rows = _render.list_lines(found)
            width = len(header)
            out.append(header.ljust(width) + "  FOUND IN")
            out.extend(
                row.ljust(width) + "  " + ", ".join(entry["matches"])
                for row, entry in zip(rows, found, strict=False)
            )
        out.extend(
            printable(
                f"process cassette {entry['process_cassette']}  FOUND IN {', '.join(entry['matches'])}"
            )
            for entry in in_processes
        )
        if out:
            sys.stdout.write("\n".join(out) + "\n")
        total = len(index.entries) + len(processes)
        click.echo(
            printable(
                f"{len(found) + len(in_processes)} of {total} cassettes contain {text!r}"
                + (f" ({len(processes)} of them process cassettes)" if processes else "")
            ),
            err=True,
        )
    if not found and not in_processes:
        sys.exit(_DIFFERENT)


@cli.command()
@click.argument("cassette")
@click.option(
    "--app",
    "app_spec",
    required=True,
    metavar="MODULE:APP",
    help="The ASGI app to replay through, as uvicorn names it.",
)
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Import the app from here (default: the current directory).",
)
@click.option("--factory", is_flag=True, help="MODULE:APP is a function that returns the app.")
@_dir_option
@click.option(
    "--ignore",
    multiple=True,
    metavar="NAME",
    help="A JSON field or header of the response to leave out of the comparison; repeat for several.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="Send this header where a request's own cannot be unsealed (it reads [REDACTED]); repeatable.",
)
@click.option(
    "--cookie",
    "cookies",
    multiple=True,
    metavar="NAME=VALUE",
    help="Send this cookie where a request's Cookie cannot be unsealed; repeatable.",
)
@click.option(
    "--credentials",
    "credentials_hook",
    metavar="MODULE:FUNCTION",
    help="A function choosing, per request, the values of its headers that cannot be unsealed.",
)
@click.option(
    "--order",
    type=click.Choice(ORDERS),
    default="recorded",
    show_default=True,
    help="The order to send the requests in.",
)
@click.option("--seed", type=int, help="The seed of --order shuffled (one is chosen and printed).")
@click.option(
    "--alone",
    is_flag=True,
    help="Replay each request in a process of its own, the app imported and started anew.",
)
@_json_option
# the requests of one recording process only: how a directory several wrote into is replayed
@click.option("--recording", hidden=True)
def replay(
    cassette: str,
    app_spec: str,
    app_dir: str | None,
    factory: bool,
    directory: str,
    ignore: tuple[str, ...],
    headers: tuple[str, ...],
    cookies: tuple[str, ...],
    credentials_hook: str | None,
    order: str,
    seed: int | None,
    alone: bool,
    as_json: bool,
    recording: str | None,
) -> None:
    """Replay recorded requests through an app, offline.

    Runs each recorded request through the app in this process, in recording order, with
    every outgoing call answered from its cassette, and prints the replay report.

    CASSETTE is a cassette file, a directory (every cassette in it), or an id in --dir.
    Exit status 1 when a response differs from the recording, a call went unanswered, a
    file in the directory is not a usable cassette (it is named, and the others replayed;
    a response whose only unchecked parts are redacted values is not a failure), or the
    app's shutdown failed (named after the report).
    Without the key that sealed them, recorded credentials read [REDACTED]: --header and
    --cookie supply them, or --credentials names a function that does per request (it gets
    the request's method, path, query and headers, and returns {header name: value}); the
    report names the requests that needed them.
    A directory that several processes recorded into (each wrote a process cassette) is
    replayed one recording process at a time, each in a process of its own, so that each
    request runs after the start its own process made.
    --order reversed or shuffled, or --alone (each request in a process of its own), shows
    what a request takes from those sent before it: state an earlier one left in the app's
    memory, which no cassette holds.
    """
    from timetracer_otel.replayers.selection import CassetteLibrary, warn_unusable

    from ._credentials import Credentials
    from .recordings import recordings_in, replay_apart, replay_each
    from .replay import AppStartError, Replayer

    stopped: str | None = None  # what the app's shutdown raised
    outside: list[str] = []  # calls outside requests the process cassette did not answer
    outside_in_all = 0  # those too many to keep included
    extra_draws = ""  # who drew values outside requests that the process cassette did not hold
    worst = 0  # the highest exit status of the processes replaying one recording each
    limits = _limits()
    try:
        credentials = Credentials.parse(headers, cookies, credentials_hook)
        location = str(_location(cassette, directory, limits))
        if order == "shuffled" and seed is None and recording is None:
            seed = new_seed()
            click.echo(f"timetracer: requests sent shuffled, --seed {seed}", err=True)
        recordings = recordings_in(location, limits) if recording is None and not alone else []
        if len(recordings) == 1:  # the others only started: replay after this one's start
            recording = recordings[0].path
        if alone:
            options = _replay_options(click.get_current_context(), ("as_json", "alone"))
            library = CassetteLibrary(location, TraceConfig(mode="replay", cassette_path=location))
            unusable = len(library.unusable)
            paths = in_order(library.in_recording_order(), order, seed or 0)
            reports, worst = replay_apart([[path, *options] for path in paths])
            if worst > 1:
                raise _Failure("the replay of a request stopped (why is above)")
        elif len(recordings) > 1:
            click.echo(
                f"timetracer: {len(recordings)} processes recorded into {printable(location)}: the "
                "requests of each replay in a process of their own, after its start",
                err=True,
            )
            unusable = len(warn_unusable(CassetteIndex(location, limits).refresh().unusable()))
            options = _replay_options(click.get_current_context(), ("as_json", "recording"))
            reports, worst = replay_each(location, recordings, options)
            if worst > 1:
                raise _Failure("the replay of a recording process stopped (why is above)")
        else:
            # what the app prints goes to stderr: stdout is the report's (--json parses)
            with (
                contextlib.redirect_stdout(sys.stderr),
                Replayer(
                    app_spec, location, app_dir, factory, ignore, credentials, recording
                ) as replayer,
            ):
                paths = in_order(replayer.cassettes(), order, seed or 0)
                reports = [replayer.replay(path) for path in paths]
                # each named in a warning when the replay began
                unusable = len(replayer.library.unusable)
            stopped = replayer.shutdown_error
            outside, outside_in_all = _unanswered_outside_requests()
            extra_draws = _extra_draws_outside_requests()
    except (CassetteError, ValueError, ImportError) as exc:
        raise _Failure(str(exc)) from None
    except AppStartError as exc:  # a replay mismatch names the call and the closest, over lines
        raise _Failure(str(exc), multiline=True) from None
    verdicts = [r.verdict for r in reports]
    if as_json:
        _print_json([r.to_dict() for r in reports])
    else:
        click.echo("\n".join(r.console_text() for r in reports))
        if len(reports) > 1 or unusable:
            unverified = (
                f"{verdicts.count('unverified')} unverified, " if "unverified" in verdicts else ""
            )
            left_out = f"; {unusable} file(s) left out, not usable cassettes" if unusable else ""
            click.echo(
                f"replayed {len(reports)} cassettes: {verdicts.count('ok')} ok, {unverified}{verdicts.count('diff')} differ{left_out}"
            )
        supplied = sum(1 for r in reports if r.supplied_credentials)
        if supplied:
            click.echo(
                f"{supplied} of {len(reports)} requests were sent with supplied credentials (their own could not be unsealed)"
            )
        locked = sum(1 for r in reports if r.sealed and not r.supplied_credentials)
        if locked:
            click.echo(
                f"{locked} of {len(reports)} requests were replayed with [REDACTED] in place of secrets sealed with a key "
                "this process does not hold: replay with that key (TIMETRACER_SECRET_KEY, or TIMETRACER_KEY_FILE "
                "naming its file), or supply the credentials with --header, --cookie or --credentials"
            )
    if stopped is not None:  # on stderr with --json: standard output is the list
        click.echo(f"the app's shutdown failed: {stopped}", err=as_json)
    if extra_draws:
        click.echo(
            "outside requests the app drew values beyond those recorded, and was given real"
            f" ones: {extra_draws} (a temporary file's name the recording's still holds? see the"
            " replay limits)",
            err=True,
        )
    if outside:
        click.echo(
            f"{outside_in_all} call(s) made outside requests (background work, the app's start or"
            " shutdown) were not answered by the process cassette:",
            err=as_json,
        )
        for line in outside[:_OUTSIDE_SHOWN]:
            click.echo(f"  {line}", err=as_json)
        if outside_in_all > _OUTSIDE_SHOWN:
            click.echo(f"  and {outside_in_all - _OUTSIDE_SHOWN} more", err=as_json)
    failed = "diff" in verdicts or unusable or stopped is not None or worst or outside
    sys.exit(_DIFFERENT if failed else 0)


_OUTSIDE_SHOWN = 5


def _unanswered_outside_requests() -> tuple[list[str], int]:
    """The first line of each mismatch raised outside every request while the app was replayed
    (the most recent ones), and how many there were: a background task's call raised where it
    was made, and the task (not a request) saw it."""
    from timetracer_otel.replayers.process import process_session

    session = process_session()
    shown = [printable(str(error).splitlines()[0]) for error in session.unmatched]
    return shown, session.unmatched_in_all


def _extra_draws_outside_requests() -> str:
    """Who drew values outside every request beyond those the process cassette recorded (real
    values were given), and how many: ``tempfile:__next__ (8)``; empty where none did."""
    from timetracer_otel.determinism.state import DrawReplayer, startup_draws

    draws = startup_draws()
    if not isinstance(draws, DrawReplayer):
        return ""
    return ", ".join(f"{caller} ({count})" for caller, count in draws.extra_callers.items())


def _replay_options(context: click.Context, leave_out: tuple[str, ...]) -> list[str]:
    """The options this command was given, but ``leave_out``, as a command line: for the
    process replaying one recording."""
    options: list[str] = []
    for parameter in context.command.params:
        value = context.params.get(parameter.name or "")
        if not isinstance(parameter, click.Option) or parameter.name in leave_out:
            continue
        flag = parameter.opts[0]
        if parameter.is_flag:
            options += [flag] if value else []
        elif parameter.multiple:
            for each in value or ():
                options += [flag, str(each)]
        elif value is not None:
            options += [flag, str(value)]
    return options


@cli.command()
@_dir_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on (only this machine by default).",
)
@click.option("--port", default=8765, show_default=True, type=int, help="The port to listen on.")
@click.option(
    "--app", "app_spec", metavar="MODULE:APP", help="The app the Replay button replays through."
)
@click.option(
    "--app-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Import the app from here (default: the current directory).",
)
@click.option("--factory", is_flag=True, help="MODULE:APP is a function that returns the app.")
@click.option(
    "--replay-header",
    "headers",
    multiple=True,
    metavar="NAME=VALUE",
    help="The Replay button sends it as timetracer replay --header does.",
)
@click.option(
    "--replay-cookie",
    "cookies",
    multiple=True,
    metavar="NAME=VALUE",
    help="The Replay button sends it as timetracer replay --cookie does.",
)
@click.option(
    "--replay-credentials",
    "credentials_hook",
    metavar="MODULE:FUNCTION",
    help="The Replay button asks it for credentials as timetracer replay --credentials does.",
)
def serve(
    directory: str,
    host: str,
    port: int,
    app_spec: str | None,
    app_dir: str | None,
    factory: bool,
    headers: tuple[str, ...],
    cookies: tuple[str, ...],
    credentials_hook: str | None,
) -> None:
    """Serve the dashboard (on 127.0.0.1 by default).

    A table of the recordings, each one's details and span waterfall, diffs and replays.
    """
    import uvicorn

    from timetracer_otel.dashboard import ReplayTarget, create_app

    problem = _no_directory(directory)
    if problem is not None:
        raise _Failure(f"timetracer: {problem}")
    from ._credentials import Credentials

    try:
        Credentials.parse(headers, cookies)  # refused now rather than at each replay
    except ValueError as exc:
        raise _Failure(str(exc)) from None
    target = (
        ReplayTarget(app_spec, app_dir, factory, headers, cookies, credentials_hook)
        if app_spec
        else None
    )
    app = create_app(directory, target, host, _limits())  # scans the directory
    gc.freeze()  # the index lives as long as the server: the collector need not walk it at every page
    listening = _listen(host, port)  # before the URL is printed: it is this dashboard's
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(
            f"timetracer: serving on {host}: other machines can open the dashboard (and its Replay button)",
            err=True,
        )
    shown_host = f"[{host}]" if ":" in host else host
    click.echo(
        printable(
            f"timetracer dashboard for {directory}: http://{shown_host}:{listening.getsockname()[1]}/"
        ),
        err=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])


def _bound(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` and listening (``OSError`` when it cannot be)."""
    family, kind, protocol, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    listening = socket.socket(family, kind, protocol)
    try:
        # as uvicorn: a port in TIME_WAIT is free
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
        listening.listen()
    except OSError:
        listening.close()
        raise
    return listening


def _listen(host: str, port: int) -> socket.socket:
    """The dashboard's socket; a failure is one line saying what to do (another port, when this one is taken)."""
    try:
        return _bound(host, port)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise _Failure(
                f"timetracer: cannot listen on {host} port {port}: {exc.strerror or exc}"
            ) from None
    for candidate in range(port + 1, min(port + _PORTS_TRIED, 65535) + 1):
        try:
            _bound(host, candidate).close()
        except OSError:
            continue
        raise _Failure(f"timetracer: port {port} is in use on {host}: try --port {candidate}")
    raise _Failure(f"timetracer: port {port} is in use on {host}: try --port 0 (any free port)")


def _otlp_json() -> Any:
    try:
        from timetracer_otel.cassette import otlp_json
    except ImportError as exc:
        raise _Failure(
            f"OTLP JSON needs opentelemetry-proto: pip install 'timetracer-otel[otlp]' ({exc})"
        ) from None
    return otlp_json


@cli.command("export")
@click.argument("cassettes", nargs=-1, required=True)
@click.option(
    "--otlp-json",
    is_flag=True,
    expose_value=False,
    help="OTLP JSON, as the OpenTelemetry Collector's file exporter writes it: the format export writes.",
)
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="The file (or s3:// URL) to write; - for standard output.",
)
@_dir_option
def export(cassettes: tuple[str, ...], output: str, directory: str) -> None:
    """Write cassettes as OpenTelemetry data (OTLP JSON), one line per cassette.

    The spans carry the request, the response and every call as `timetracer.cassette.*`
    attributes, so `timetracer import` gives the same cassettes back.
    CASSETTE is a file, a directory or s3:// prefix (every cassette below it), or an id in --dir.
    """
    codec = _otlp_json()
    limits = _limits()
    lines, skipped = [], 0
    for reference in cassettes:
        target = _location(reference, directory, limits)
        for file in _cassettes_at(target):
            try:
                lines.append(_exported_line(codec, file, limits))
            except _Failure as exc:
                if str(file) == str(target):  # a cassette named alone: the command fails
                    raise
                # below a directory, as the other commands do: named, and the export goes on
                click.echo(f"{exc.message}; the export goes on without it", err=True)
                skipped += 1
    if output == "-":
        # the same JSON, with no character a terminal acts on
        sys.stdout.write(printable_json("".join(lines)))
    else:
        try:
            replace(output, "".join(lines).encode("utf-8"))
        except OSError as exc:
            raise _Failure(f"cannot write {output}: {exc}") from None
    click.echo(
        f"exported {len(lines)} cassette(s) as OTLP JSON"
        + ("" if output == "-" else f" to {output}"),
        err=True,
    )
    if skipped:
        raise _Failure(f"{skipped} cassette(s) could not be exported (named above)")


def _exported_line(codec: Any, file: CassetteFile, limits: ReadLimits) -> str:
    """The OTLP JSON line of the cassette ``file``; :class:`_Failure` naming it when it cannot be."""
    doc = _load(file, limits)
    try:
        return codec.to_line(doc) + "\n"
    except ValueError as exc:
        raise _Failure(f"{file}: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise _Failure(f"{file}: cannot be exported ({exc!r})") from None


def _lines(file: str, limits: ReadLimits) -> list[tuple[str, bytes]]:
    """``(where, line)`` of each line of an OTLP JSON file (local or URL), no larger than ``limits`` allow."""
    try:
        data = read_bytes(file, limits.max_bytes)
    except TooLarge as exc:
        raise _Failure(
            f"cannot read {file}: it is {exc.size} bytes; TIMETRACER_READ_MAX_BYTES allows {limits.max_bytes}"
        ) from None
    except OSError as exc:
        raise _Failure(f"cannot read {file}: {exc.strerror or exc}") from None
    return [(f"{file} line {number}", line) for number, line in enumerate(data.split(b"\n"), 1)]


@cli.command("import")
@click.argument("files", nargs=-1, required=True)
@_dir_option
@click.option("--compression", type=click.Choice(COMPRESSIONS, case_sensitive=False), default="none", envvar="TIMETRACER_COMPRESSION",
              show_default=True, help="Write .json.gz cassettes with gzip (or TIMETRACER_COMPRESSION).")  # fmt: skip
def import_command(files: tuple[str, ...], directory: str, compression: str) -> None:
    """Turn OTLP JSON files (as `export --otlp-json` or a collector's file exporter write them) into cassettes.

    Spans of many traces, in any order and on any line, are regrouped per cassette; the
    cassettes are written to --dir (a directory or s3:// prefix) under their usual names.
    A cassette already there is not written twice. Exit status 1 when something could
    not be imported (an incomplete cassette, a line that is not OTLP JSON).
    """
    from timetracer_otel.exporters.files import store

    limits = _limits()
    imported = _otlp_json().from_lines(
        (line for file in files for line in _lines(file, limits)), limits
    )
    written = skipped = 0
    for doc in imported.cassettes:
        try:
            validate_document(doc, f"trace {doc.get('trace_id')} cassette {doc.get('id')}")
            if store(doc, directory, compression, skip_identical=True) is None:
                skipped += 1
            else:
                written += 1
        except CassetteError as exc:
            imported.problems.append(str(exc))
        except OSError as exc:
            raise _Failure(f"cannot write to {directory}: {exc}") from None
    for problem in imported.problems:
        click.echo(printable(f"timetracer: not imported: {problem}"), err=True)
    already = f" ({skipped} already there)" if skipped else ""
    click.echo(
        f"imported {written} cassette(s) from {imported.spans_seen} span(s) to {directory}{already}",
        err=True,
    )
    sys.exit(_DIFFERENT if imported.problems else 0)
