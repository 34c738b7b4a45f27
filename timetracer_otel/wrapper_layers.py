"""Installing timetracer's wrappers *below* OpenTelemetry's wrappers on the same method.

Capture and replay must sit under the OTel instrumentor's wrapper so that the
instrumentor's span is current when our code runs (and replayed calls still make
spans). If the method is already wrapped (by an instrumentor or anyone using wrapt),
our wrapper goes under the innermost one; if it is not, ours goes on the method and
whatever wraps it later lands on top. Each of our layers has a name ("capture",
"replay"); a method carries each layer at most once.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import wrapt

__all__ = [
    "Seam",
    "install",
    "uninstall",
    "install_all",
    "uninstall_all",
    "is_installed",
    "original",
]


class _Layer(wrapt.FunctionWrapper):
    """Base of our layers, recognised by ``type()``: wrapt proxies forward ``__class__``."""


_LAYERS: dict[str, type[_Layer]] = {
    "capture": type("_CaptureLayer", (_Layer,), {}),
    "replay": type("_ReplayLayer", (_Layer,), {}),
}


def _chain(owner: Any, name: str) -> list[Any]:
    """The attribute and every wrapt layer under it, outermost first."""
    layers = [inspect.getattr_static(owner, name)]
    while issubclass(type(layers[-1]), wrapt.FunctionWrapper):
        layers.append(layers[-1].__wrapped__)
    return layers


def original(owner: Any, name: str) -> Any:
    """``owner.name`` under every wrapper: the library's own function."""
    return _chain(owner, name)[-1]


_DEEPEST = 64  # wrappers looked through: a proxy may name a new object as wrapped each time


def _beneath(owner: Any, name: str) -> Iterator[Any]:
    """The attribute and everything it names as wrapped, outermost first: wrapt layers, and
    plain functions patched over them, which cannot be re-linked but name what they call in
    ``__wrapped__`` (made with ``functools.wraps``) or keep it in their closure (sentry-sdk
    2.18 patches ``Redis.execute_command`` with ``old = cls.execute_command`` and a function
    calling ``old``). Such a function wraps the layers as the class gave them out, bound by
    wrapt: each bound one is followed by the layer it was bound from."""
    item: Any = inspect.getattr_static(owner, name)
    for _ in range(_DEEPEST):
        if item is None:
            return
        yield item
        bound_from = getattr(item, "_self_parent", None)  # wrapt's, on a bound wrapper
        if bound_from is not None:
            yield bound_from
        item = getattr(item, "__wrapped__", None) or _wrapper_in_closure(item)


def _wrapper_in_closure(function: Any) -> Any:
    """The wrapt wrapper a plain function keeps in its closure, or None."""
    for cell in getattr(function, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:  # a cell not filled yet
            continue
        # type(): a wrapt proxy gives the wrapped function's __class__ to isinstance
        if issubclass(type(content), (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)):
            return content
    return None


def is_installed(owner: Any, name: str, layer: str = "capture") -> bool:
    """Whether ``owner.name`` calls through our ``layer``, however deep under other wrappers:
    installed again under a plain function that wraps it, every call was recorded twice."""
    return any(type(item) is _LAYERS[layer] for item in _beneath(owner, name))


def install(owner: Any, name: str, wrapper: Callable[..., Any], layer: str = "capture") -> None:
    """Wrap ``owner.name`` (a class's method or a module's function) with ``wrapper(wrapped, instance, args, kwargs)``, under any other wrapper."""
    if is_installed(owner, name, layer):
        return
    layers = _chain(owner, name)
    ours = _LAYERS[layer](layers[-1], wrapper)
    if len(layers) == 1:
        setattr(owner, name, ours)
    else:
        layers[-2].__wrapped__ = ours


def uninstall(owner: Any, name: str, layer: str = "capture") -> None:
    layers = _chain(owner, name)
    for index, item in enumerate(layers[:-1]):
        if type(item) is _LAYERS[layer]:
            if index == 0:
                setattr(owner, name, item.__wrapped__)
            else:
                layers[index - 1].__wrapped__ = item.__wrapped__
            return


# (class or module, attribute, wrapper): one place a capture or a replayer wraps
Seam = tuple[Any, str, Callable[..., Any]]


def install_all(seams: Iterable[Seam], layer: str = "capture") -> None:
    """:func:`install` each of ``seams`` (a library's capture or replayer, whole)."""
    for owner, name, wrapper in seams:
        install(owner, name, wrapper, layer)


def uninstall_all(seams: Iterable[Seam], layer: str = "capture") -> None:
    """:func:`uninstall` each of ``seams``."""
    for owner, name, _ in seams:
        uninstall(owner, name, layer)
