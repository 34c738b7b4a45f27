"""No automatic garbage collection while a recorded or replayed request runs.

An ORM session's identity map holds loaded objects weakly: whether a query is sent (a
relationship loaded again after ``refresh``, say) depends on whether the collector freed an
object in a reference cycle first. The collector runs after a count of allocations, and
capture allocates differently from replay, so a collection fell inside a request in one run
and not in the other: the replay sent a query the cassette did not have. Held, neither run
collects inside the request; the allocations are collected as usual once no recorded or
replayed request runs.

The hold is shared by concurrent requests (the collector is one per process) and gives way
when it has lasted for :data:`_OVERDUE` allocations: a server never idle between requests,
or a response streamed for hours, still collects its garbage, at the start of a request or
as a response is sent.
"""

from __future__ import annotations

import gc
import threading

__all__ = ["hold", "release", "collect_if_overdue"]

# net allocations of tracked objects after which a held collector collects anyway (the
# default threshold is 700): memory stays bounded under requests that always overlap
_OVERDUE = 100_000

_lock = threading.RLock()  # a finalizer run by a collection may start a request
_holders = 0
_resume = False  # whether the collector was on when the hold began (the app may turn it off)


def hold() -> None:
    """Hold automatic collection for one more request; collect first if the hold is overdue."""
    global _holders, _resume
    with _lock:
        if _holders == 0:
            _resume = gc.isenabled()
            gc.disable()
        _holders += 1
        _collect_overdue()


def release() -> None:
    """End one request's hold; the last one gives collection back and runs what is due.

    Run here, not left to the next allocation: that one comes as the request's context
    variables are reset (a hash trie half changed), and a finalizer the collection runs there
    that sets a context variable crashes CPython 3.10 and 3.11 (a segmentation fault in
    ``PyContextVar_Reset``, in about one replay in three of a service whose objects have such
    finalizers)."""
    global _holders
    with _lock:
        if _holders == 0:
            return
        _holders -= 1
        if _holders == 0 and _resume:
            gc.enable()
            _run_due_collection()


def collect_if_overdue() -> None:
    """As a held request goes on (each message it sends): collect if the hold is overdue."""
    if _holders and gc.get_count()[0] > _OVERDUE:
        with _lock:
            _collect_overdue()


def _collect_overdue() -> None:
    """Run, with the lock held, the collection the collector would have, once overdue."""
    if _holders and _resume and gc.get_count()[0] > _OVERDUE:
        gc.enable()
        try:
            _run_due_collection()
        finally:
            gc.disable()


class _Tracked:
    """An object the collector tracks: allocating one is what sets off an automatic collection."""


def _run_due_collection() -> None:
    """Run the automatic collection that is due, if one is, with the collector on: the
    interpreter chooses its generations by its own rules, which put off a full collection
    until enough objects wait in the oldest one (chosen here by the counts alone, a suite's
    growing heap was traversed whole every few tests). Allocating a tracked object runs it
    (3.10, 3.11) or has it run as the call returns (3.12 on)."""
    _Tracked()
