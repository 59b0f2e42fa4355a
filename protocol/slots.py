"""Builders of frozen attrs objects for hot paths: the slots set directly, no ``__init__``.

Rules:
- attrs' generated ``__init__`` of a frozen slotted class calls a bound ``object.__setattr__``
  per field; a decoder that builds one object per message pays that on every message.
  ``slot_builder(cls)`` returns a function taking every field positionally, in field
  order, that sets each slot through its descriptor (generated once, straight-line).
- Only for classes without defaults factories, converters or validators that matter on
  that path: the builder refuses classes with converters or validators (they would be
  skipped), and the caller passes every field.
- Where the extension is built, ``make`` is its ``build_slots`` bound to the class and
  descriptors (a C call, not a Python frame of a store per field: ~55 bytecodes a
  result on the send path); the generated function stays the definition
  (``python_slot_builder``; tests/unit/test_slots.py holds the two equal).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from protocol import speedups

_T = TypeVar("_T")


def slot_descriptors(cls: type) -> tuple[Any, ...]:
    """The member descriptors of a slotted attrs class's slots, in field order: what sets
    each slot (``__set__``), for the builders here and the compiled ones
    (``protocol/_speedups.c``, which take them with the class).

    Raises:
        TypeError: ``cls`` is not a slotted attrs class.
    """
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slotted attrs class")
    return tuple(cls.__dict__[field.name] for field in attrs.fields(cls))


def slot_builder(cls: type[_T]) -> Callable[..., _T]:
    """``make(field1, field2, ...)`` building ``cls`` like ``cls(field1=..., ...)``: the
    compiled ``build_slots`` where it is built, else ``python_slot_builder(cls)``.

    Raises:
        TypeError: ``cls`` is not a slotted attrs class, or a field has a converter or
            validator (the builder would skip it).
    """
    if speedups.build_slots is None:
        return python_slot_builder(cls)
    return functools.partial(speedups.build_slots, (cls, *_buildable_descriptors(cls)))


def python_slot_builder(cls: type[_T]) -> Callable[..., _T]:
    """``slot_builder``'s generated function: a store per slot through its descriptor.

    Raises:
        TypeError: as ``slot_builder``.
    """
    descriptors = _buildable_descriptors(cls)
    names = [field.name for field in attrs.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for name, descriptor in zip(names, descriptors, strict=True):
        namespace[f"_set_{name}"] = descriptor.__set__
    lines = [f"def make({', '.join(names)}):", "    obj = _new(_cls)"]
    lines += [f"    _set_{name}(obj, {name})" for name in names]
    lines.append("    return obj")
    exec("\n".join(lines), namespace)  # generated from the field names only
    make: Callable[..., _T] = namespace["make"]
    return make


def _buildable_descriptors(cls: type) -> tuple[Any, ...]:
    """``slot_descriptors(cls)``, refused for a class with a field a builder would skip
    the converter or validator of (``slot_builder``'s check, whichever builds)."""
    descriptors = slot_descriptors(cls)
    for field in attrs.fields(cls):
        if field.converter is not None or field.validator is not None:
            raise TypeError(f"{cls.__name__}.{field.name} has a converter or validator")
    return descriptors
