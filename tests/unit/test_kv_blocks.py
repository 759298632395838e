"""The paged KV cache's block manager: allocation, prefix sharing by block hash, copy-on-write,
eviction, and all-or-nothing failure when the pool is full."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from rill.backends.base import KVCacheFull
from rill.backends.torch.blocks import BlockManager


def put(m: BlockManager, seq_id: int, tokens: np.ndarray, start: int, reusable: int = 0):
    """Append and compute, as the backend does in one step."""
    placed = m.append(seq_id, tokens, start, reusable=reusable)
    m.computed(seq_id)
    return placed


def toks(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, n).astype(np.int32)


def test_positions_get_consecutive_slots_of_whole_blocks():
    m = BlockManager(num_blocks=8, block_size=4)
    placed = put(m, 0, toks(6), 0)
    assert placed.num_reused == 0
    blocks = m.seqs[0].blocks
    assert len(blocks) == 2
    assert placed.slots.tolist() == [blocks[0] * 4 + i for i in range(4)] + [blocks[1] * 4, blocks[1] * 4 + 1]
    more = put(m, 0, toks(3, 1), 6)  # fills block 1, opens block 2
    assert more.slots.tolist()[:2] == [blocks[1] * 4 + 2, blocks[1] * 4 + 3]
    assert m.slots(0).tolist() == [*placed.slots.tolist(), *more.slots.tolist()]
    assert m.num_available == 8 - 3


def test_blocks_are_named_only_once_computed():
    m = BlockManager(num_blocks=8, block_size=4)
    m.append(0, toks(8), 0)
    assert m.append(1, toks(8), 0, reusable=8).num_reused == 0  # seq 0's keys are not there yet
    m.computed(0)
    assert m.append(2, toks(8), 0, reusable=8).num_reused == 8


def test_a_prompt_starting_like_a_cached_one_maps_its_full_blocks():
    m = BlockManager(num_blocks=16, block_size=4)
    shared = toks(10)
    put(m, 0, shared, 0)
    other = np.concatenate([shared, toks(5, 7)])
    placed = put(m, 1, other, 0, reusable=len(other) - 1)
    assert placed.num_reused == 8  # two whole blocks; the third was only half full in seq 0
    assert m.seqs[1].blocks[:2] == m.seqs[0].blocks[:2]
    assert m.refs[m.seqs[0].blocks[0]] == 2
    assert len(placed.slots) == len(other) - 8
    assert m.num_hits == 2


def test_a_different_prefix_with_the_same_block_contents_is_not_shared():
    m = BlockManager(num_blocks=16, block_size=4)
    put(m, 0, np.array([1, 2, 3, 4, 5, 6, 7, 8], np.int32), 0)
    placed = put(m, 1, np.array([9, 9, 9, 9, 5, 6, 7, 8, 1], np.int32), 0, reusable=8)
    assert placed.num_reused == 0  # block 2 matches by contents, but names its whole prefix


def test_released_blocks_stay_reusable_until_evicted_least_recently_freed_first():
    m = BlockManager(num_blocks=4, block_size=4)
    a, b = toks(8, 1), toks(8, 2)
    put(m, 0, a, 0)
    m.release(0)
    put(m, 1, b, 0)
    m.release(1)
    assert m.num_available == 4
    assert put(m, 2, a, 0, reusable=8).num_reused == 8  # still cached
    m.release(2)
    put(m, 3, toks(8, 3), 0)  # needs two blocks: evicts b's (freed before a's second release)
    assert put(m, 4, b, 0, reusable=8).num_reused == 0
    m.release(4)
    assert put(m, 5, a, 0, reusable=8).num_reused == 0  # b's re-run evicted a's in turn


def test_released_blocks_are_reused_before_untouched_ones_last_freed_first():
    # memory never used costs page faults on first touch: the pool grows into it only when
    # every released unnamed block is in use again
    m = BlockManager(num_blocks=8, block_size=4)
    m.append(0, toks(6), 0)  # partial blocks: never named
    m.append(1, toks(3, seed=1), 0)
    first, second = list(m.seqs[0].blocks), list(m.seqs[1].blocks)
    assert m.num_touched == 3
    m.release(0)
    m.release(1)
    m.append(2, toks(12, seed=2), 0)
    assert m.seqs[2].blocks == [second[0], first[1], first[0]]  # the last freed first
    assert m.num_touched == 3 and m.num_available == 5
    m.append(3, toks(1, seed=3), 0)
    assert m.seqs[3].blocks == [3] and m.num_touched == 4


def test_copy_shares_blocks_and_the_first_write_copies_the_shared_partial_block():
    m = BlockManager(num_blocks=8, block_size=4)
    put(m, 0, toks(6), 0)
    m.copy(0, 1)
    assert m.seqs[1].blocks == m.seqs[0].blocks
    assert m.refs[m.seqs[0].blocks[1]] == 2
    placed = put(m, 1, toks(1, 5), 6)
    fresh = m.seqs[1].blocks[1]
    original = m.seqs[0].blocks[1]
    assert fresh != original and m.copies == [(original, fresh)]
    assert placed.slots.tolist() == [fresh * 4 + 2]
    assert m.seqs[1].blocks[0] == m.seqs[0].blocks[0]  # the full block stays shared
    assert m.refs[original] == 1
    put(m, 0, toks(1, 6), 6)  # seq 0 now owns its block alone: no copy
    assert len(m.copies) == 1


def test_swap_exchanges_block_tables_without_copying():
    m = BlockManager(num_blocks=8, block_size=4)
    put(m, 0, toks(6), 0)
    put(m, 2, toks(3, 1), 0)
    tables = {0: list(m.seqs[0].blocks), 2: list(m.seqs[2].blocks)}
    available = m.num_available
    m.swap(0, 2)
    assert m.seqs[2].blocks == tables[0] and m.seqs[0].blocks == tables[2]
    assert m.seqs[2].tokens == toks(6).tolist()
    m.swap(2, 5)  # with an empty slot: the cache moves
    assert 2 not in m.seqs and m.seqs[5].blocks == tables[0]
    assert m.num_available == available and m.copies == []


def test_truncate_then_append_writes_a_copy_and_the_cut_block_stays_mappable():
    m = BlockManager(num_blocks=8, block_size=4)
    t = toks(8)
    put(m, 0, t, 0)
    cut = m.seqs[0].blocks[1]
    m.truncate(0, 5)
    assert m.length(0) == 5 and len(m.seqs[0].blocks) == 2 and len(m.seqs[0].hashes) == 1
    put(m, 0, np.array([7, 7, 7], np.int32), 5)
    assert m.seqs[0].tokens == [*t[:5].tolist(), 7, 7, 7]
    assert m.seqs[0].blocks[1] != cut and m.copies == [(cut, m.seqs[0].blocks[1])]
    # the cut block kept its contents and name: a prompt beginning as t maps both blocks
    assert put(m, 1, t, 0, reusable=8).num_reused == 8
    assert m.seqs[1].blocks[1] == cut
    # and seq 0's rewritten block is named by its new contents
    assert put(m, 2, np.array([*t[:5], 7, 7, 7], np.int32), 0, reusable=8).num_reused == 8


def test_appending_before_the_end_truncates_first():
    m = BlockManager(num_blocks=8, block_size=4)
    put(m, 0, toks(7), 0)
    placed = put(m, 0, toks(2, 3), 5)
    assert m.length(0) == 7 and len(placed.slots) == 2
    with pytest.raises(ValueError):
        put(m, 0, toks(1), 9)


def test_a_full_pool_raises_and_changes_nothing():
    m = BlockManager(num_blocks=3, block_size=4)
    put(m, 0, toks(10), 0)
    m.copy(0, 1)
    before = (list(m.seqs[0].blocks), m.refs.copy(), m.num_available)
    with pytest.raises(KVCacheFull):
        put(m, 1, toks(8, 1), 10)  # a copy-on-write and two more blocks: 3 > 0 free
    assert (m.seqs[0].blocks, m.num_available) == (before[0], before[2])
    assert (m.refs == before[1]).all() and m.length(1) == 10


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["append", "copy", "truncate", "release"]),
                          st.integers(0, 3), st.integers(0, 3), st.integers(1, 12)), max_size=40))
def test_reference_counts_always_equal_the_tables_holding_each_block(ops):
    m = BlockManager(num_blocks=24, block_size=4)
    for op, a, b, n in ops:
        try:
            if op == "append":
                tokens, start = toks(n, b) % 3, m.length(a) - b % 2  # few distinct tokens: many hits
                start = max(start, 0)
                refs = m.refs.copy()
                foreseen = m.mappable(a, tokens, start, n)
                assert (m.refs == refs).all()  # foreseeing changes nothing
                assert put(m, a, tokens, start, reusable=n).num_reused == foreseen
            elif op == "copy":
                m.copy(a, b)
            elif op == "truncate":
                m.truncate(a, max(0, m.length(a) - n))
            else:
                m.release(a)
        except KVCacheFull:
            pass
        counts = np.zeros(24, np.int32)
        for seq in m.seqs.values():
            for blk in seq.blocks:
                counts[blk] += 1
            assert len(seq.blocks) == -(-len(seq.tokens) // 4)
            assert len(seq.hashes) == len(seq.tokens) // 4
        assert (counts == m.refs).all()
        assert m.num_available == int((m.refs == 0).sum())
