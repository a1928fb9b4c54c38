"""The random methods' draws, drawn ahead on a helper thread (merge_core/merge/draw_stream.py): the values of
one draw on the merge's thread, and a stream left early or failing does not hang the merge."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from merge_core.merge.draw_stream import DRAWS_AHEAD, DrawStream
from merge_core.merge.scratch import HUGE_PAGE_MIN_BYTES, scratch_like


def test_pieces_taken_are_one_draw_of_the_whole():
    sizes = [5, 32768, 1, 1000, 32768, 7] * 3
    want = torch.rand(sum(sizes), generator=torch.Generator().manual_seed(11))
    with DrawStream(torch.Generator().manual_seed(11), sizes) as stream:
        got = torch.cat([stream.take(torch.empty(n)) for n in sizes])
    assert torch.equal(got, want)


def test_take_shapes_the_piece_as_asked():
    with DrawStream(torch.Generator().manual_seed(1), [12]) as stream:
        assert stream.take(torch.empty(3, 4)).shape == (3, 4)


def test_leaving_early_stops_the_helper():
    before = threading.active_count()
    t0 = time.perf_counter()
    with DrawStream(torch.Generator().manual_seed(2), [1000] * (DRAWS_AHEAD * 4)) as stream:
        stream.take(torch.empty(1000))
    assert time.perf_counter() - t0 < 5.0
    assert threading.active_count() == before


def test_a_failed_draw_is_raised_where_the_piece_is_taken():
    with DrawStream(torch.Generator().manual_seed(3), [4, -1]) as stream:
        stream.take(torch.empty(4))
        with pytest.raises(RuntimeError):
            stream.take(torch.empty(1))


@pytest.mark.parametrize("numel", [10, HUGE_PAGE_MIN_BYTES // 4 + 3])
def test_scratch_is_a_writable_tensor_like_the_model(numel):
    like = torch.zeros(numel)
    scratch = scratch_like(like.view(1, -1))
    assert scratch.shape == (1, numel) and scratch.dtype == torch.float32 and scratch.is_contiguous()
    scratch.fill_(2.5)
    assert float(scratch.sum()) == 2.5 * numel and float(like.sum()) == 0.0
