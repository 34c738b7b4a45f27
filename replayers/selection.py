"""Which cassette answers a replayed request: chosen from an index, loaded when chosen.

A request is answered by a cassette with the same signature: the method; the exact path,
else the route template; the query string and request body in canonical form (redacted and
cut as recorded); and the fingerprint of the secrets redaction removed, when this process
holds the key the recording used. Where a part finds no cassette it is left out (another
path of the same route, a query and body or secrets never recorded) and the report says so
for secrets. A recorded query or body that hides a value (``[REDACTED]``) also fits a live
one showing any text there: the recording hid what its response or calls made secret (a
cookie set to the username the login form sent), which the live request does not carry.
A method and path that one cassette has are answered by it, as a cassette given alone
answers every request: nothing else would change the choice. A request may also name its
cassette (:data:`PIN_HEADER`: an id, a file name or its start), to replay one recording of
many alike.
Cassettes sharing a signature are used in recording order (``recorded_at``, then file
name), with a turn counter per signature: the Nth request with signature S gets the Nth
cassette recorded with S, and after the last one the first again.

At start only the directory's index is read (kept by
:class:`~timetracer_otel.cli.index.CassetteIndex`, which parses and checks each new or
changed cassette once). A file in the directory that is not a usable cassette is left out
and named, with its reason, in a warning at start; one given alone stops the app there.
A cassette document is parsed again when a request chooses it; the last few chosen stay
in memory.
"""

from __future__ import annotations

import functools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from timetracer_otel._diagnostics import logger
from timetracer_otel._fingerprint import fingerprint, key_id_of
from timetracer_otel._keys import key_for
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.body import header_value
from timetracer_otel.cassette.document import BLOCK_METHOD, Cassette, recorded_instant
from timetracer_otel.cassette.reader import (
    CassetteError,
    is_cassette_file,
    load_cassette,
    recording_directory,
)
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import RecordedDraws, decode_draws
from timetracer_otel.inbound import Scope, latin1_headers, route_template
from timetracer_otel.protocols.http import content_digest, content_fits, live_body
from timetracer_otel.redaction import REDACTED, Redactor, redactor_for

from .earlier import EarlierRequests, recorded_in
from .opening import Opened, open_for_replay
from .report import RecordedResponse
from .session import RecordedViews, credentials_of
from .shared_turns import SharedTurns, shared_turns

__all__ = ["PIN_HEADER", "CassetteLibrary", "Choice", "LiveRequest", "Prepared", "warn_unusable"]

PIN_HEADER = "x-timetracer-cassette"

# Cassettes kept parsed, by the size of their files: a parsed cassette takes 3 to 4 times its
# file's size. Replay takes turns among the cassettes of one request: a directory of a few
# thousand small ones stays parsed, where a count of 32 reloaded each on every turn.
_CACHED_BYTES = 16 * 1024 * 1024
_UNKNOWN_SIZE = 64 * 1024  # a cassette under a URL prefix, whose size the scan does not give
_LOCKED = (
    "unverifiable without the key: the cassette's secrets are sealed and this process has no key, "
    "so the app got [REDACTED] in their place (credentials, password hashes, random values it drew); differences may come from that"
)
_NO_CASSETTE: dict[str, Any] = {"calls": [], "response": {}, "id": None}


class LiveRequest:
    """The parts of an incoming request a cassette is chosen by."""

    def __init__(
        self,
        method: str,
        path: str,
        route: str | None,
        query: str,
        raw_headers: Iterable[tuple[bytes, bytes]],
        body: bytes
        | None,  # None when the library does not need it (see CassetteLibrary.needs_body)
    ) -> None:
        self.method, self.path, self.route, self.query = method, path, route, query
        self.body = body
        self._raw_headers = raw_headers

    @functools.cached_property
    def headers(self) -> list[tuple[str, str]]:
        """Decoded when asked for: a library of one cassette never needs them to choose."""
        return latin1_headers(self._raw_headers)

    @classmethod
    def from_scope(cls, scope: Scope, body: bytes | None, routed: bool = True) -> LiveRequest:
        """``routed``: work out the route template (see :meth:`CassetteLibrary.needs_route`)."""
        return cls(
            scope.get("method", "GET"),
            scope.get("path", ""),
            route_template(scope, scope) if routed else None,
            bytes(scope.get("query_string", b"")).decode("latin-1"),
            scope.get("headers", ()),
            body,
        )


class Prepared(NamedTuple):
    """A cassette as replay uses it, worked out once while it stays loaded: its calls' views,
    its draws decoded, the scope parts its server set (as ASGI has them) and its response as
    the replayed one is compared with."""

    opened: Opened
    views: RecordedViews
    draws: RecordedDraws
    server_parts: dict[str, Any]
    host: bytes | None  # the Host header the request came with: links and redirects are built on it
    response: RecordedResponse

    @classmethod
    def of(cls, opened: Opened, path: str, config: TraceConfig) -> Prepared:
        cassette = Cassette(opened.answers)
        parts = cassette.request.server_parts
        if "client" in parts:
            parts = {**parts, "client": tuple(parts["client"])}
        host = header_value(cassette.request.headers, "host")
        return cls(
            opened,
            opened.views(path),
            decode_draws(cassette.draws),
            parts,
            host.encode("latin-1", "replace") if host is not None else None,
            RecordedResponse(cassette.response, config.replay_ignore_fields),
        )

    def as_recorded(self, scope: MutableMapping[str, Any]) -> dict[str, Any]:
        """``scope`` as the server showed the recorded request to the app: its peer, scheme and
        root path (rate limits, audit rows, links) and its ``Host`` (absolute links, redirects)."""
        scope = {**scope, **self.server_parts}
        if self.host is not None:
            scope["headers"] = _with_host(scope.get("headers") or [], self.host)
        return scope


def _with_host(headers: Any, host: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with the recorded ``host`` in place of the replaying client's (where it stood)."""
    kept = [(name, value) for name, value in headers if name.lower() != b"host"]
    at = next((i for i, (name, _) in enumerate(headers) if name.lower() == b"host"), 0)
    return [*kept[:at], (b"host", host), *kept[at:]]


@dataclass
class Choice:
    """The cassette answering one request (``path`` None when none fits), and what the report should say about the choice."""

    path: str | None
    document: dict[str, Any]  # sealed secrets opened when this process holds the key
    views: RecordedViews
    notes: list[str]
    shown: dict[str, Any] | None = (
        None  # the document with every secret as [REDACTED], when it differs
    )
    prepared: Prepared | None = None  # None when no cassette fits


class _Entry(NamedTuple):
    path: str
    content: str  # the query string's and request body's digest (protocols.http.content_digest)
    holes: bool  # whether they hide a value (protocols.http.content_holes)
    fingerprint: str | None


class _Turns:
    """The cassettes of one signature, in recording order, and how many requests took one."""

    __slots__ = ("signature", "entries", "fingerprints", "taken")

    def __init__(self, signature: str) -> None:
        self.signature = signature  # the same in every process replaying the directory
        self.entries: list[_Entry] = []
        self.fingerprints: frozenset[str] = frozenset()
        self.taken = 0

    def take(self, shared: SharedTurns | None) -> _Entry:
        """The next cassette in turn, counted with the other processes replaying the directory
        where ``shared``; after the last, the first again (call with the library's lock held)."""
        taken = shared.take(self.signature) if shared is not None else None
        entry = self.entries[(self.taken if taken is None else taken) % len(self.entries)]
        self.taken += 1
        return entry


class _Group:
    """The cassettes of one method and path (or route), indexed by content and fingerprint when first asked for."""

    __slots__ = ("name", "entries", "templates", "_turns", "_contents")

    def __init__(self, name: str) -> None:
        self.name = name  # by path or by route, method and path or route
        self.entries: list[_Entry] = []
        # content digest -> the (query, body, content-type header) its cassettes were recorded
        # with, hiding a value: read from a cassette once, then compared from here
        self.templates: dict[str, tuple[str, Any, list]] = {}
        self._turns: dict[tuple[str | None, str | None], _Turns] | None = None
        self._contents = 0

    @property
    def contents_differ(self) -> bool:
        """Whether its cassettes were recorded with different query strings or bodies: otherwise
        those of the live request cannot change the choice, and need no digest."""
        self._index()
        return self._contents > 1

    def turns(self, content: str | None, fingerprint: str | None) -> _Turns | None:
        """The cassettes with this content digest and fingerprint (None: any); None when there are none."""
        return self._index().get((content, fingerprint))

    def _index(self) -> dict[tuple[str | None, str | None], _Turns]:
        """The turns by (content, fingerprint), made when first needed."""
        if self._turns is None:
            turns: dict[tuple[str | None, str | None], _Turns] = {}
            for entry in self.entries:
                for key in {
                    (entry.content, entry.fingerprint),
                    (entry.content, None),
                    (None, entry.fingerprint),
                    (None, None),
                }:
                    if key not in turns:
                        turns[key] = _Turns("\0".join((self.name, *(k or "" for k in key))))
                    turns[key].entries.append(entry)
            for each in turns.values():
                each.fingerprints = frozenset(
                    e.fingerprint for e in each.entries if e.fingerprint is not None
                )
            self._contents = len({entry.content for entry in self.entries})
            self._turns = turns  # whole when seen: read without the library's lock
        return self._turns

    def holed_contents(self, other_than: str | None) -> dict[str, _Entry]:
        """The first cassette of each content digest other than ``other_than`` whose query or
        body hides a value, in recording order."""
        found: dict[str, _Entry] = {}
        for entry in self.entries:
            if entry.holes and entry.content != other_than:
                found.setdefault(entry.content, entry)
        return found


class _Documents:
    """The most recently chosen cassettes, parsed, with their call views, up to ``budget`` bytes of their files."""

    def __init__(self, budget: int, sizes: dict[str, int], config: TraceConfig) -> None:
        self._budget = budget
        self._sizes = sizes  # path -> its file's size
        self._config = config
        self._cache: OrderedDict[str, Prepared] = OrderedDict()
        self._held = 0  # bytes of the files of the cached cassettes
        self._lock = threading.Lock()

    def get(self, path: str) -> Prepared:
        with self._lock:
            found = self._cache.get(path)
            if found is not None:
                self._cache.move_to_end(path)
                return found
        # outside the lock: others choose meanwhile
        opened = open_for_replay(
            load_cassette(path, limits=self._config.read_limits), path, self._config
        )
        try:
            found = Prepared.of(opened, path, self._config)
        except Exception as exc:  # a file valid in form whose content cannot serve (a hostile one)
            raise CassetteError(path, f"cannot be replayed: {type(exc).__name__}: {exc}") from None
        with self._lock:
            if path not in self._cache:
                self._held += self._sizes.get(path, _UNKNOWN_SIZE)
            self._cache[path] = found
            while self._held > self._budget and len(self._cache) > 1:
                evicted, _ = self._cache.popitem(last=False)
                self._held -= self._sizes.get(evicted, _UNKNOWN_SIZE)
        return found


_warned: set[str] = set()  # the problems named so far in this process


def warn_unusable(errors: list[CassetteError]) -> list[CassetteError]:
    """Name each file left out of a replay, in a warning, once per process (``timetracer replay``
    reads the directory as the app it starts does); ``errors`` again."""
    for error in errors:
        text = str(error)
        if text not in _warned:
            _warned.add(text)
            logger.warning("%s; the replay goes on without it", printable(text))
    return errors


class CassetteLibrary:
    """The cassettes at ``location`` (a cassette, a directory or an ``s3://`` prefix) and the choice of one per request.

    :class:`~timetracer_otel.cassette.reader.CassetteError` when the location is unset, holds
    no cassettes, is a file that is not a usable cassette, or holds no usable one (the first
    unusable file is named). Unusable files beside usable ones are left out: ``unusable``.
    """

    def __init__(
        self,
        location: str | None,
        config: TraceConfig | None = None,
        only: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """``config``: whose key opens sealed secrets (default: the environment's); ``only``: which
        of the index's rows to keep (the requests of one recording process)."""
        if not location:
            raise CassetteError(
                "(unset)",
                "replay mode needs TIMETRACER_CASSETTE (or TraceConfig(cassette_path=...))",
            )
        self.location = location
        config = config if config is not None else TraceConfig(mode="replay")
        index = CassetteIndex(location, config.read_limits).refresh()
        self.unusable = index.unusable()
        if self.unusable and not index.entries:
            raise self.unusable[0]  # a file given alone, or a directory holding nothing usable
        if not index.entries:
            raise CassetteError(location, "the directory holds no cassettes")
        if only is not None:
            self.unusable = []  # the replay of the whole directory names them
        warn_unusable(self.unusable)
        files = index.files()
        rows = sorted(
            filter(only, index.entries.values()),
            key=lambda row: (recorded_instant(row["recorded_at"]), row["key"]),
        )
        self._entries = [
            _Entry(
                str(files[row["key"]]),
                row["content_digest"],
                row["content_holes"],
                row["fingerprint"],
            )
            for row in rows
        ]
        # cassettes of code blocks (the pytest plugin's): they have no request to send
        self._blocks = {
            entry.path
            for row, entry in zip(rows, self._entries, strict=True)
            if row["method"] == BLOCK_METHOD
        }
        self._by_path: dict[tuple[str, str], _Group] = {}
        self._by_route: dict[tuple[str, str], _Group] = {}
        for row, entry in zip(rows, self._entries, strict=False):
            for groups, kind, where in (
                (self._by_path, "path", row["path"]),
                (self._by_route, "route", row["route"]),
            ):
                if where is not None:
                    key = (row["method"], where)
                    if key not in groups:
                        groups[key] = _Group(f"{kind} {row['method']} {where}")
                    groups[key].entries.append(entry)
        sizes = {
            str(files[key]): size
            for key in index.entries
            if (size := index.size_of(key)) is not None
        }
        self._documents = _Documents(_CACHED_BYTES, sizes, config)
        self._index, self._files = index, files
        self._by_file = {entry.path: entry for entry in self._entries}
        # a cassette given alone: the recording it came from is in the directory it wrote into
        own = self._entries[0].path if is_cassette_file(location) else None
        self.earlier = EarlierRequests(
            lambda: recorded_in(recording_directory(own) if own else location, config, own=own),
            self._views,
            credentials=functools.partial(self._credentials, redactor_for(config)),
            draws=lambda path: self.load(path).draws,
        )
        self._lock = threading.Lock()

    @functools.cached_property
    def _shared_turns(self) -> SharedTurns | None:
        """The turns of the processes replaying this directory, opened at the first turn taken
        (with the library's lock held); None for a cassette given alone or in S3."""
        return shared_turns(self.location) if os.path.isdir(self.location) else None

    def needs_body(self, method: str, path: str) -> bool:
        """True when the request body can take part in the choice: more than one cassette has
        this method and path, or none has it and the route decides."""
        if len(self._entries) == 1:
            return False
        group = self._by_path.get((method, path))
        return group is None or len(group.entries) > 1

    def needs_route(self, method: str, path: str) -> bool:
        """True when the route template takes part in the choice: no cassette has this very path
        (working it out matches the path against the application's routes)."""
        return len(self._entries) > 1 and (method, path) not in self._by_path

    def in_recording_order(self) -> list[str]:
        """Every request cassette, in the order the requests were recorded (not those of code
        blocks the pytest plugin recorded: it replays them)."""
        return [entry.path for entry in self._entries if entry.path not in self._blocks]

    def load(self, path: str) -> Prepared:
        """A cassette of this library opened for replay (kept for the next few requests)."""
        return self._documents.get(path)

    def _views(self, path: str) -> RecordedViews:
        return self.load(path).views

    def _credentials(self, redactor: Redactor | None, path: str) -> frozenset[str]:
        """The secrets the request a cassette recorded came with (opened with the key)."""
        request = self.load(path).opened.answers.get("request")
        if redactor is None or not isinstance(request, dict):
            return frozenset()
        return credentials_of(redactor, request)

    def select(self, request: LiveRequest, config: TraceConfig) -> Choice:
        """The cassette for ``request``; its query and body are compared redacted and cut per ``config``, its secrets by fingerprint."""
        if len(self._entries) == 1:
            return self._chosen(self._entries[0], self._alone_notes(request))
        group = self._by_path.get((request.method, request.path))
        if group is None and request.route is not None:
            group = self._by_route.get((request.method, request.route))
        if group is None:
            return Choice(None, _NO_CASSETTE, [], [])
        if len(group.entries) == 1:  # it answers, as a cassette given alone does
            return self._chosen(group.entries[0], [])
        body = (
            live_body(request.body, request.headers, config.max_body_bytes)
            if request.body is not None
            else None
        )
        message, secrets = _as_recorded(request, body, config)
        query, headers, body = message["query"], message["headers"], message["body"]
        differ = body is not None and group.contents_differ
        digest = content_digest(query, body, headers) if differ else None
        everything = group.turns(None, None)
        assert everything is not None  # every group has (None, None)
        same_content = group.turns(digest, None) if differ else None
        printed, unknown = self._fingerprint(same_content or everything, secrets, config)
        # the contents the request may have been recorded with, the one it shows first
        contents = [digest] if same_content is not None else []
        if differ and (
            same_content is None
            or (printed is not None and printed not in same_content.fingerprints)
        ):
            contents += self._fitting(group, digest, message)
            same_content = group.turns(contents[0], None) if contents else None
        candidates = same_content or everything
        with self._lock:
            exact = None
            if printed is not None:
                exact = next(
                    filter(None, (group.turns(c, printed) for c in contents or [None])), None
                )
            if exact is None and differ:
                exact = self._unread(group, request, config, same_content is not None)
            entry = (exact or candidates).take(self._shared_turns)
        return self._chosen(entry, _notes(candidates, secrets, printed, exact is not None, unknown))

    def _alone_notes(self, request: LiveRequest) -> list[str]:
        """A cassette given alone answers every request: the report says so when this one is not
        its method and path (or route), as that explains every difference that follows."""
        recorded = next(iter(self._by_path))
        if recorded == (request.method, request.path) or (
            request.route is not None and (request.method, request.route) in self._by_route
        ):
            return []
        return [
            f"the cassette given alone was recorded for {recorded[0]} {printable(recorded[1])}, and answered"
            f" {request.method} {printable(request.path)}"
        ]

    def reference_of(self, path: str) -> str | None:
        """The key naming the cassette at ``path`` (one of :meth:`in_recording_order`) and no other."""
        return self._keys_by_file.get(path)

    @functools.cached_property
    def _keys_by_file(self) -> dict[str, str]:
        return {str(file): key for key, file in self._files.items()}

    def pinned(self, reference: str) -> Choice:
        """The cassette a request names (its id, key, or the start of its key or file name),
        taking no turn; :class:`CassetteError` when that names none or several. The report
        notes the choice, unless the name is a whole key (``timetracer replay``'s own pin)."""
        found = [str(self._files[key]) for key in self._index.find(reference)]
        usable = [path for path in found if path in self._by_file]
        if len(usable) != 1:
            problem = (
                f"holds {len(usable)} cassettes named by {reference!r}: {', '.join(sorted(usable)[:5])}"
                if usable
                else f"holds no cassette named by {reference!r} (an id, or a file name or its start)"
            )
            raise CassetteError(self.location, f"{problem}; the {PIN_HEADER} header chooses one")
        whole_key = reference in self._files
        return self._chosen(
            self._by_file[usable[0]], [] if whole_key else [f"chosen by its {PIN_HEADER} header"]
        )

    def _fitting(self, group: _Group, digest: str | None, message: dict[str, Any]) -> list[str]:
        """The content digests of the group's cassettes whose query and body, where they hide a
        value, fit the live request's (``message``, as recorded): a value the recording hid
        because its response or calls made it secret (a cookie set to the username the form
        sent) shows in the live request, which does not carry that secret."""
        live = (message["query"], message["body"], message["headers"])
        fitting = []
        for content, entry in group.holed_contents(digest).items():
            recorded = group.templates.get(content)
            if recorded is None:
                request = self.load(entry.path).opened.shown["request"]
                kind = header_value(request.get("headers") or [], "content-type")
                recorded = group.templates[content] = (
                    request.get("query", ""),
                    request.get("body"),
                    [["content-type", kind]] if kind is not None else [],
                )
            if content_fits(recorded, live):
                fitting.append(content)
        return fitting

    def _unread(
        self, group: _Group, request: LiveRequest, config: TraceConfig, content_found: bool
    ) -> _Turns | None:
        """The cassettes recorded with this request's query and secrets where the app never read
        the body (a CSRF check or an auth dependency refusing it first): replay reads the body to
        choose, the recording only has what the app read. Without secrets to tell them apart,
        only when no cassette has the body itself (``content_found``)."""
        message, secrets = _as_recorded(request, None, config)
        unread = group.turns(content_digest(message["query"], None, message["headers"]), None)
        if unread is None:
            return None
        printed, _ = self._fingerprint(unread, secrets, config)
        if printed is not None:
            return group.turns(unread.entries[0].content, printed)
        return None if content_found or unread.fingerprints else unread

    @staticmethod
    def _fingerprint(
        candidates: _Turns, secrets: list[tuple[str, str]], config: TraceConfig
    ) -> tuple[str | None, str]:
        """(the request's fingerprint, or None and why it has none) for comparing with the candidates'."""
        if not candidates.fingerprints:
            return None, ""
        if redactor_for(config) is None:
            return None, "redaction is off in this replay"
        key = key_for(config)
        recorded_ids = sorted(
            {key_id for key_id in map(key_id_of, candidates.fingerprints) if key_id is not None}
        )
        if key is None:
            return (
                None,
                f"this process has no secret key (they were fingerprinted with key {', '.join(recorded_ids)})",
            )
        if key.key_id not in recorded_ids:
            return (
                None,
                f"they were fingerprinted with key {', '.join(recorded_ids)}, this process has key {key.key_id}",
            )
        if secrets and all(value == REDACTED for _, value in secrets):
            return None, "this request carries redacted placeholders, not secret values"
        return fingerprint(secrets, key), ""

    def _chosen(self, entry: _Entry, notes: list[str]) -> Choice:
        prepared = self.load(entry.path)
        opened = prepared.opened
        if opened.locked:
            notes = [*notes, _LOCKED]
        return Choice(
            entry.path,
            opened.answers,
            prepared.views,
            notes,
            opened.shown if opened.unsealed else None,
            prepared,
        )


def _as_recorded(
    request: LiveRequest, body: dict[str, Any] | None, config: TraceConfig
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The request's headers, query and ``body`` (cassette form) as its recording keeps them: the
    query and body redacted, by name and by value (the headers choose the body's kind); and the
    secrets taken out by name."""
    message: dict[str, Any] = {
        "headers": [list(h) for h in request.headers],
        "query": request.query,
        "body": body,
    }
    redactor = redactor_for(config)
    secrets = redactor.request_secrets(message) if redactor is not None else []
    return message, secrets


def _notes(
    candidates: _Turns,
    secrets: list[tuple[str, str]],
    printed: str | None,
    exact: bool,
    unknown: str,
) -> list[str]:
    """What the report says when the secrets could not decide between cassettes."""
    if printed is None and unknown and len(candidates.fingerprints) > 1:
        return [
            f"{len(candidates.entries)} cassettes of this request differ in their secret values and {unknown}: "
            "the request could not be told apart by its secrets; taken in recording order"
        ]
    if printed is not None and not exact:
        names = ", ".join(sorted({where for where, _ in secrets})) or "none"
        return [
            f"no cassette of this request was recorded with these secret values (secrets: {names}): "
            f"taken in recording order from {len(candidates.entries)} recorded with others"
        ]
    return []
