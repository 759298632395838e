"""rill.sampling.sampler: greedy, nucleus (top-p), temperature and seeded sampling."""

from __future__ import annotations

import numpy as np
import pytest

from rill.sampling.sampler import adjust_logits, inverse_cdf, kth_largest, new_rng, nucleus, sample, softmax, token_logprobs


class NoRandomness:
    """An rng stand-in that fails the test if anything asks it for a random number."""

    def __getattr__(self, name):
        raise AssertionError(f"greedy sampling used the rng ({name})")


def full_sort_nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Reference: sort the whole vocabulary by (-prob, id), keep the first prefix reaching top_p."""
    order = np.lexsort((np.arange(probs.size), -probs))
    cut = int(np.searchsorted(np.cumsum(probs[order]), top_p, side="left")) + 1
    return order[:cut]


def draws(logits, temperature: float, top_p: float, seed: int | None, n: int) -> np.ndarray:
    rng = new_rng(seed)
    return np.array([sample(logits, temperature, top_p, rng) for _ in range(n)])


# ---- greedy ------------------------------------------------------------------------------------


@pytest.mark.parametrize("top_p", [1.0, 0.1])
def test_temperature_zero_is_argmax_and_uses_no_randomness(top_p):
    logits = np.array([0.5, 3.0, -1.0, 2.9], dtype=np.float32)
    assert sample(logits, 0.0, top_p, NoRandomness()) == 1


def test_greedy_leaves_a_real_rng_untouched():
    rng = new_rng(7)
    before = rng.bit_generator.state
    assert sample(np.array([1.0, 0.0, 5.0]), 0.0, 1.0, rng) == 2
    assert rng.bit_generator.state == before


def test_greedy_tie_goes_to_the_lowest_token_id():
    assert sample(np.array([1.0, 4.0, 4.0, 0.0]), 0.0, 1.0, NoRandomness()) == 1


# ---- nucleus -----------------------------------------------------------------------------------


def test_top_p_one_keeps_every_token():
    probs = np.array([0.1, 0.6, 0.3])
    ids, p = nucleus(probs, 1.0)
    assert sorted(ids.tolist()) == [0, 1, 2]
    assert dict(zip(ids.tolist(), p.tolist())) == {0: 0.1, 1: 0.6, 2: 0.3}


def test_tiny_top_p_keeps_only_the_most_likely_token():
    ids, p = nucleus(np.array([0.2, 0.5, 0.3]), 1e-9)
    assert ids.tolist() == [1] and p.tolist() == [0.5]


def test_nucleus_is_most_likely_first():
    ids, p = nucleus(np.array([0.125, 0.5, 0.25, 0.125]), 0.875)
    assert ids.tolist() == [1, 2, 0]
    assert p.tolist() == [0.5, 0.25, 0.125]


def test_ties_are_broken_by_token_id():
    ids, _ = nucleus(np.array([0.25, 0.125, 0.25, 0.25, 0.125]), 0.5)
    assert ids.tolist() == [0, 2]
    ids, _ = nucleus(np.array([0.125, 0.25, 0.125, 0.5]), 0.75)
    assert ids.tolist() == [3, 1]


@pytest.mark.parametrize(
    ("top_p", "kept"),
    [(0.5, [0]), (0.5000001, [0, 1]), (0.75, [0, 1]), (0.7500001, [0, 1, 2]), (0.875, [0, 1, 2])],
)
def test_exact_boundary_mass_is_enough(top_p, kept):
    # dyadic probabilities, so cumulative sums are exact: mass exactly top_p stops the nucleus
    probs = np.array([0.5, 0.25, 0.125, 0.125])
    assert nucleus(probs, top_p)[0].tolist() == kept


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95, 0.995])
def test_argpartition_shortcut_matches_a_full_sort(seed, top_p):
    # peaked logits over a large vocabulary: the 512 best candidates hold top_p
    logits = np.random.default_rng(seed).normal(0.0, 6.0, 5000)
    probs = softmax(logits)
    order = np.argsort(-probs)
    assert probs[order[:512]].sum() >= top_p  # the shortcut path is the one under test
    ids, p = nucleus(probs, top_p)
    expected = full_sort_nucleus(probs, top_p)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(p, probs[expected])


@pytest.mark.parametrize("top_p", [0.3, 0.9])
def test_flat_large_vocabulary_falls_back_to_a_full_sort(top_p):
    logits = np.random.default_rng(1).normal(0.0, 0.1, 4000)
    probs = softmax(logits)
    assert probs[np.argsort(-probs)[:512]].sum() < top_p  # the 512 candidates are not enough
    np.testing.assert_array_equal(nucleus(probs, top_p)[0], full_sort_nucleus(probs, top_p))


def test_argpartition_shortcut_breaks_ties_by_token_id():
    probs = np.full(1024, 1 / 1024)  # all tied; 256 tokens hold exactly 0.25
    np.testing.assert_array_equal(nucleus(probs, 0.25)[0], np.arange(256))


# ---- seeded sampling ---------------------------------------------------------------------------

FLATISH = np.random.default_rng(3).normal(0.0, 0.5, 64)


def test_same_seed_gives_the_same_tokens():
    np.testing.assert_array_equal(draws(FLATISH, 1.0, 0.9, 42, 300), draws(FLATISH, 1.0, 0.9, 42, 300))


def test_different_seeds_give_different_tokens():
    a, b = draws(FLATISH, 1.0, 1.0, 1, 200), draws(FLATISH, 1.0, 1.0, 2, 200)
    assert (a != b).sum() > 100


def test_unseeded_requests_get_fresh_randomness():
    assert not np.array_equal(draws(FLATISH, 1.0, 1.0, None, 100), draws(FLATISH, 1.0, 1.0, None, 100))


@pytest.mark.parametrize("seed", [-1, -(2**63), 2**64 - 1])
def test_seeds_across_the_accepted_range_are_deterministic(seed):
    np.testing.assert_array_equal(draws(FLATISH, 1.0, 1.0, seed, 50), draws(FLATISH, 1.0, 1.0, seed, 50))


# ---- distribution ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 1.7])
def test_sampled_frequencies_follow_the_tempered_softmax(temperature):
    logits = np.array([1.0, 0.0, 2.0, -1.0, 0.5], dtype=np.float32)
    n = 20_000
    counts = np.bincount(draws(logits, temperature, 1.0, 1234, n), minlength=logits.size)
    expected = n * softmax(logits.astype(np.float64) / temperature)
    band = 6 * np.sqrt(expected * (1 - expected / n)) + 5  # ~6 sigma, fixed seed: deterministic
    assert np.all(np.abs(counts - expected) <= band), (counts, expected.round())


def test_tokens_outside_the_nucleus_are_never_sampled():
    logits = np.log(np.array([0.4, 0.05, 0.3, 0.05, 0.2]))
    n = 5_000
    tokens = draws(logits, 1.0, 0.85, 99, n)
    assert set(tokens.tolist()) == {0, 2, 4}  # 0.4 + 0.3 + 0.2 = 0.9 reaches 0.85
    counts = np.bincount(tokens, minlength=5)
    expected = n * np.array([0.4, 0, 0.3, 0, 0.2]) / 0.9  # renormalised inside the nucleus
    assert np.all(np.abs(counts - expected) <= 6 * np.sqrt(expected) + 5)


def test_high_temperature_flattens_and_low_temperature_sharpens():
    logits = np.array([2.0, 0.0, 0.0, 0.0])
    top_share = [np.mean(draws(logits, t, 1.0, 5, 4_000) == 0) for t in (0.25, 1.0, 2.0)]
    assert top_share[0] > top_share[1] > top_share[2]


# ---- adjust_logits: OpenAI's penalties and bias, against hand-computed values ---------------

def test_no_adjustment_returns_the_row_itself():
    row = np.array([1.0, 2.0, 3.0], np.float32)
    assert adjust_logits(row, [0, 1]) is row
    assert adjust_logits(row, [], frequency_penalty=1.0, presence_penalty=1.0) is row  # nothing generated


def test_frequency_and_presence_penalties_follow_openais_formula():
    row = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    out = adjust_logits(row, [2, 2, 0, 2], frequency_penalty=0.5, presence_penalty=0.25)
    # token 0 came once: 1 - 0.5 - 0.25; token 2 three times: 3 - 1.5 - 0.25; 1 and 3 never
    assert out.tolist() == [0.25, 2.0, 1.25, 4.0]
    assert row.tolist() == [1.0, 2.0, 3.0, 4.0]  # the engine's logits row is left alone


def test_negative_penalties_reward_repetition():
    out = adjust_logits(np.zeros(3, np.float32), [1, 1], frequency_penalty=-1.0, presence_penalty=-0.5)
    assert out.tolist() == [0.0, 2.5, 0.0]


def test_logit_bias_is_added_and_minus_100_bans_plus_100_forces():
    row = np.array([5.0, 1.0, 0.0], np.float32)
    assert adjust_logits(row, [], logit_bias=((1, 2.5),)).tolist() == [5.0, 3.5, 0.0]
    assert sample(adjust_logits(row, [], logit_bias=((0, -100.0),)), 0.0, 1.0, np.random.default_rng(0)) == 1
    rng = np.random.default_rng(0)
    forced = adjust_logits(row, [], logit_bias=((2, 100.0),))
    assert all(sample(forced, 1.0, 1.0, rng) == 2 for _ in range(200))


def test_penalties_and_bias_combine():
    out = adjust_logits(np.array([1.0, 1.0], np.float32), [0], frequency_penalty=1.0, logit_bias=((0, 3.0), (1, -1.0)))
    assert out.tolist() == [3.0, 0.0]


# ---- token_logprobs -----------------------------------------------------------------------

def test_token_logprobs_are_log_softmax_with_the_best_first():
    row = np.array([1.0, 3.0, 2.0, 3.0], np.float32)
    lse = np.log(np.exp(row.astype(np.float64)).sum())
    logprob, top = token_logprobs(row, 2, 3)
    assert logprob == pytest.approx(2.0 - lse)
    assert [t for t, _ in top] == [1, 3, 2]  # tie between 1 and 3 broken by id
    assert [lp for _, lp in top] == pytest.approx([3.0 - lse, 3.0 - lse, 2.0 - lse])


def test_token_logprobs_edge_cases():
    row = np.array([0.0, 50.0], np.float32)
    logprob, top = token_logprobs(row, 1, 0)
    assert top == () and logprob == 0.0  # never positive, even rounded
    _, top = token_logprobs(row, 0, 20)  # more asked than the vocabulary has
    assert [t for t, _ in top] == [1, 0]


# ---- the inverse CDF over a large vocabulary ------------------------------------------------------


def sequential_inverse_cdf(weights: np.ndarray, u: float) -> int:
    """Reference: one running sum over the whole vocabulary."""
    cum = np.cumsum(weights, dtype=np.float64)
    return int(np.searchsorted(cum, u * cum[-1], side="right"))


@pytest.mark.parametrize("size", [1, 5, 1023, 1024, 5000, 49152])
def test_block_sums_pick_the_token_a_running_sum_picks(size):
    gen = np.random.default_rng(size)
    weights = np.exp(gen.normal(0.0, 3.0, size)).astype(np.float32)
    weights[gen.random(size) < 0.3] = 0.0  # top-k's and grammar masks' zeros
    weights[gen.integers(size)] = 1.0
    for u in np.concatenate([gen.random(300), [0.0, np.nextafter(1.0, 0.0)]]):
        token = inverse_cdf(weights, float(u))
        assert weights[token] > 0
        reference = min(sequential_inverse_cdf(weights, float(u)), size - 1)
        # the same token, but where u lands within rounding of a boundary (none of these do)
        assert token == reference, (u, token, reference)


def test_the_last_token_with_weight_is_reached_and_zeros_after_it_are_not():
    weights = np.zeros(3000, dtype=np.float32)
    weights[[5, 2047]] = 1.0
    assert inverse_cdf(weights, np.nextafter(1.0, 0.0)) == 2047
    assert inverse_cdf(weights, 0.0) == 5


def test_top_k_over_a_large_vocabulary_samples_only_the_k_best_in_proportion():
    logits = np.random.default_rng(9).normal(0.0, 1.0, 40_000).astype(np.float32)
    best = np.argsort(-logits)[:4]
    rng = new_rng(5)
    n = 8000
    drawn = np.array([sample(logits, 1.0, 1.0, rng, top_k=4) for _ in range(n)])
    assert set(drawn.tolist()) <= set(best.tolist())
    expected = n * softmax(logits[best].astype(np.float64))
    counts = np.array([(drawn == t).sum() for t in best])
    assert np.all(np.abs(counts - expected) <= 6 * np.sqrt(expected) + 5), (counts, expected.round())


@pytest.mark.parametrize("k", [1, 5, 40, 512, 3000])
@pytest.mark.parametrize("shape", ["normal", "ties", "top_off_the_subsample", "ascending"])
def test_kth_largest_is_exact_whatever_the_values(k, shape):
    gen = np.random.default_rng(k)
    x = gen.normal(0.0, 2.0, 49152).astype(np.float32)
    if shape == "ties":
        x = np.round(x)  # a dozen distinct values
    elif shape == "top_off_the_subsample":  # the largest values where the every-16th sample never looks
        x[np.arange(49152) % 16 != 0] += 100.0
    elif shape == "ascending":
        x = np.sort(x)
    assert kth_largest(x, k) == np.sort(x)[-k]
