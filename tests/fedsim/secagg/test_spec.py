"""Tensor specs: names, shapes, layout, and clear errors for bad updates."""
import numpy as np
import pytest

from fedsim.secagg.errors import TensorSpecError
from fedsim.secagg.spec import TensorSpec


def test_layout_is_sorted_by_name():
    spec = TensorSpec.of({"b": (2, 3), "a": (4,)})
    assert spec.names == ("a", "b") and spec.sizes == (4, 6) and spec.total == 10
    assert spec.slices() == {"a": slice(0, 4), "b": slice(4, 10)}
    assert TensorSpec.from_update({"a": np.zeros(4), "b": np.zeros((2, 3))}) == spec


def test_digest_depends_on_names_and_shapes():
    assert TensorSpec.of({"a": (4,)}).digest() != TensorSpec.of({"a": (2, 2)}).digest()
    assert TensorSpec.of({"a": (4,)}).digest() != TensorSpec.of({"b": (4,)}).digest()


@pytest.mark.parametrize("update, message", [
    ({"a": np.zeros(4)}, r"missing \['b'\]"),
    ({"a": np.zeros(4), "b": np.zeros((2, 3)), "c": np.zeros(1)}, r"unexpected \['c'\]"),
    ({"a": np.zeros(4), "b": np.zeros((3, 2))}, r"'b' has shape \(3, 2\), the spec says \(2, 3\)"),
    ({"a": np.array([0.0, np.nan, 0, 0]), "b": np.zeros((2, 3))}, "'a' contains NaN"),
    ({"a": np.array(["x"] * 4), "b": np.zeros((2, 3))}, "non-numeric"),
])
def test_bad_updates_raise_naming_the_problem(update, message):
    spec = TensorSpec.of({"a": (4,), "b": (2, 3)})
    with pytest.raises(TensorSpecError, match=message):
        spec.check(update, "client 7")


def test_empty_spec_is_rejected():
    with pytest.raises(TensorSpecError):
        TensorSpec.of({})
