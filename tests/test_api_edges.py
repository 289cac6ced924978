"""Bad arguments to topkbench.topk: each a UsageError naming the argument, never a raw TypeError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import topkbench
from topkbench.errors import UsageError

X = np.random.default_rng(0).standard_normal((3, 50)).astype(np.float32)


@pytest.mark.parametrize("k", [np.int64(5), np.int32(5), np.uint8(5), torch.tensor(5)])
def test_k_of_any_integer_type(k):
    idx = topkbench.topk(X, k, impl="numpy")
    assert idx.shape == (3, 5) and idx.dtype == np.int32


@pytest.mark.parametrize("k", [None, 2.0, True, 0, -3, "5"])
def test_bad_k_names_k(k):
    with pytest.raises(UsageError, match=r"^k must be an integer >= 1"):
        topkbench.topk(X, k)


@pytest.mark.parametrize(("logits", "message"), [
    (X[:, ::-1], "logits has negative strides"),
    (X.astype(">f4"), "logits must be in the machine's byte order"),
    ([[1.0, 2.0]], "logits must be a torch tensor, CuPy array or NumPy array"),
    (X[0], "logits must be 2-D"),
])
def test_bad_logits_name_logits(logits, message):
    with pytest.raises(UsageError, match=message):
        topkbench.topk(logits, 3)


@pytest.mark.parametrize("lengths", [np.array([-1, 5, 5], dtype=np.int32), np.array([1, 51, 5], dtype=np.int32),
                                     torch.tensor([0, 50, 51], dtype=torch.int32)])
def test_host_lengths_outside_the_width_are_an_error(lengths):
    with pytest.raises(UsageError, match=r"lengths must lie in \[0, 50\]"):
        topkbench.topk(X if isinstance(lengths, np.ndarray) else torch.from_numpy(X), 3, lengths=lengths)


def test_lengths_at_the_bounds_are_fine():
    idx = topkbench.topk(X, 3, lengths=np.array([0, 50, 2], dtype=np.int32), impl="torch-cpu")
    assert (idx[0] == -1).all() and (idx[2] == [0, 1, -1]).all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"lengths": [1, 2, 3]}, "lengths must be a torch tensor"),
    ({"lengths": np.array([1, 2, 3], dtype=np.int64)}, "lengths must be int32"),
    ({"impl": None}, "impl must be an implementation name"),
    ({"impl": "no-such"}, "unknown implementation 'no-such'"),
])
def test_other_bad_arguments(kwargs, message):
    with pytest.raises(UsageError, match=message):
        topkbench.topk(X, 3, **kwargs)


def test_deterministic_auto_never_runs_a_nondet_build(monkeypatch):
    from topkbench import api, dispatch

    monkeypatch.setattr(api.registry, "names", lambda: ["torch-cpu", "numpy", "fake", "fake-nondet"])
    monkeypatch.setattr(api.registry, "unavailable_reason", lambda name: None)
    monkeypatch.setattr(api.registry, "is_builtin", lambda name: True)

    class _Impl:
        device = api.Device.CPU

    monkeypatch.setattr(api.registry, "get", lambda name: _Impl())
    monkeypatch.setattr(dispatch, "choose", lambda *args: "fake-nondet")
    cpu = torch.device("cpu")
    assert api.resolve_auto(4, 100, 8, cpu) == "fake"
    assert api.resolve_auto(4, 100, 8, cpu, deterministic=False) == "fake-nondet"


def test_deterministic_must_be_a_bool():
    with pytest.raises(UsageError, match="deterministic must be True or False"):
        topkbench.topk(X, 3, deterministic="yes")
