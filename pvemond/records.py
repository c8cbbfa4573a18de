"""Typed records for the modules pvemond-claim loads, without loading `typing`.

typing.NamedTuple reads best, but importing typing is about 4 ms of pvemond-claim's start-up
(measured: a tenth of the whole claim). `@record` makes the same class body (annotated fields,
defaults, methods, docstring) a collections.namedtuple subclass. The client modules say
`from __future__ import annotations`, so annotations stay strings that nothing evaluates, and
import typing's names only for checkers:

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import Optional
"""
from __future__ import annotations

from collections import namedtuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Type, TypeVar
    T = TypeVar("T")


def record(cls: Type[T]) -> Type[T]:
    """`cls` as an immutable tuple of its annotated fields, in order; like typing.NamedTuple,
    fields with a default must come last."""
    own = vars(cls)
    fields = list(own.get("__annotations__", {}))
    defaults = [own[name] for name in fields if name in own]
    if any(name not in own for name in fields[len(fields) - len(defaults):]):
        raise TypeError(f"{cls.__name__}: a field without a default follows one with a default")
    base = namedtuple(cls.__name__, fields, defaults=defaults, module=cls.__module__)
    body = {k: v for k, v in own.items() if k not in fields and k not in ("__dict__", "__weakref__")}
    return type(cls.__name__, (base,), {**body, "__slots__": ()})
