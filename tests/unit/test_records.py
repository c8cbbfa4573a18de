"""records.record: typing.NamedTuple's class body, collections.namedtuple's price."""
from __future__ import annotations

import pickle

import pytest

from pvemond.records import record


@record
class Point:
    """A point."""
    x: int
    y: int
    label: str = "origin"

    def moved(self, dx: int) -> "Point":
        return self._replace(x=self.x + dx)

    @property
    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


def test_fields_defaults_and_methods_are_the_class_bodys():
    p = Point(1, -2)
    assert p == (1, -2, "origin") and Point._fields == ("x", "y", "label")
    assert p.moved(3) == Point(4, -2) and p.norm1 == 3
    assert Point.__doc__ == "A point." and Point.__name__ == "Point"
    assert Point.__module__ == __name__ and Point.__qualname__ == "Point"
    assert p._asdict() == {"x": 1, "y": -2, "label": "origin"}


def test_records_are_immutable_tuples_without_a_dict():
    p = Point(1, 2, "a")
    assert isinstance(p, tuple)
    with pytest.raises(AttributeError):
        p.x = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        p.extra = 1  # type: ignore[attr-defined]


def test_a_record_pickles_as_itself():
    p = Point(1, 2, "a")
    assert pickle.loads(pickle.dumps(p)) == p and type(pickle.loads(pickle.dumps(p))) is Point


def test_a_default_before_a_field_without_one_is_refused():
    with pytest.raises(TypeError, match="without a default follows one with a default"):
        @record
        class Bad:
            a: int = 0
            b: int
