"""Installing capture wrappers *below* OpenTelemetry's wrappers on the same method.

Capture (and later replay) must sit under the OTel instrumentor's wrapper so that the
instrumentor's span is current when our code runs. If the method is already wrapped
(by an instrumentor or anyone using wrapt), our wrapper goes under the innermost one;
if it is not, ours goes on the method and whatever wraps it later lands on top.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import wrapt

__all__ = ["install", "uninstall", "is_installed"]



class _CaptureWrapper(wrapt.FunctionWrapper):
    """Our layer. Recognised by ``type()``: wrapt proxies forward attribute lookups and ``__class__``."""


def _chain(owner: type, name: str) -> list[Any]:
    """The attribute and every wrapt layer under it, outermost first."""
    layers = [inspect.getattr_static(owner, name)]
    while issubclass(type(layers[-1]), wrapt.FunctionWrapper):
        layers.append(layers[-1].__wrapped__)
    return layers


def is_installed(owner: type, name: str) -> bool:
    return any(type(layer) is _CaptureWrapper for layer in _chain(owner, name))


def install(owner: type, name: str, wrapper: Callable[..., Any]) -> None:
    """Wrap ``owner.name`` with ``wrapper(wrapped, instance, args, kwargs)``, under any other wrapper."""
    if is_installed(owner, name):
        return
    layers = _chain(owner, name)
    ours = _CaptureWrapper(layers[-1], wrapper)
    if len(layers) == 1:
        setattr(owner, name, ours)
    else:
        layers[-2].__wrapped__ = ours


def uninstall(owner: type, name: str) -> None:
    layers = _chain(owner, name)
    for index, layer in enumerate(layers[:-1]):
        if type(layer) is _CaptureWrapper:
            if index == 0:
                setattr(owner, name, layer.__wrapped__)
            else:
                layers[index - 1].__wrapped__ = layer.__wrapped__
            return
