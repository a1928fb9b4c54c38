"""ProducedAhead: the next tensor is computed on the worker while the caller writes; order, errors, threads."""
from __future__ import annotations

import threading

import pytest
import torch

from merge_core.files.produce_ahead import ProducedAhead


def test_values_in_order_one_ahead_on_one_worker_thread():
    calls, threads = [], set()

    def produce(name):
        calls.append(name)
        threads.add(threading.current_thread().name)
        return torch.full((2,), float(int(name)))

    order = [str(i) for i in range(5)]
    with ProducedAhead(order, produce) as ahead:
        for name in order:
            assert torch.equal(ahead(name), torch.full((2,), float(int(name))))
            assert len(calls) <= int(name) + 2  # never more than one tensor ahead of the caller
    assert calls == order
    assert len(threads) == 1 and threading.current_thread().name not in threads


def test_an_error_reaches_the_caller_at_its_tensor_and_out_of_order_is_refused():
    def produce(name):
        if name == "b":
            raise ValueError("source B is truncated at 'b'")
        return torch.zeros(1)

    with ProducedAhead(["a", "b", "c"], produce) as ahead:
        ahead("a")
        with pytest.raises(ValueError, match="truncated at 'b'"):
            ahead("b")
    with ProducedAhead(["a", "b"], produce) as ahead:
        with pytest.raises(RuntimeError, match="out of order: 'b', expected a"):
            ahead("b")
