"""Turning one row of logits into one token: vectorised numpy over the vocabulary, with a
per-request seeded RNG so a seeded request samples the same tokens whatever else runs."""

from __future__ import annotations

import secrets

import numpy as np

# top-p first looks at this many best candidates (argpartition, O(V)) and only sorts the whole
# vocabulary when they hold less than p of the probability mass.
_TOP_P_CANDIDATES = 512


def new_rng(seed: int | tuple[int, int] | None) -> np.random.Generator:
    """The request's own generator; an unseeded request gets a fresh random seed. Choice i > 0
    of a seeded request uses (seed, i), so choice 0 equals the n = 1 answer."""
    if seed is None:
        return np.random.default_rng(secrets.randbits(64))
    if isinstance(seed, tuple):
        return np.random.default_rng([seed[0] & (2**64 - 1), seed[1]])
    return np.random.default_rng(seed & (2**64 - 1))


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def nucleus(probs: np.ndarray, top_p: float) -> tuple[np.ndarray, np.ndarray]:
    """The smallest set of most likely tokens whose mass reaches top_p: (token ids, probs),
    most likely first (ties broken by token id). top_p = 1 keeps the vocabulary in id order."""
    if top_p >= 1.0:
        return np.arange(probs.size), probs
    ids = np.arange(probs.size)
    if _TOP_P_CANDIDATES < probs.size:
        # every token at least as likely as the k-th best, so ties at the edge are all kept
        kth = kth_largest(probs, _TOP_P_CANDIDATES)
        candidates = np.flatnonzero(probs >= kth)
        if candidates.size <= 4 * _TOP_P_CANDIDATES and probs[candidates].sum() >= top_p:
            ids = candidates
    order = ids[np.lexsort((ids, -probs[ids]))]
    # the first prefix whose mass reaches top_p (float error past the end keeps everything)
    cut = int(np.searchsorted(np.cumsum(probs[order]), top_p, side="left")) + 1
    keep = order[:cut]
    return keep, probs[keep]


# Below this, logits / temperature can overflow to inf (NaN after softmax); the distribution is a
# point mass on the argmax long before, so such temperatures are greedy.
_MIN_TEMPERATURE = 1e-6


def adjust_logits(logits: np.ndarray, generated: list[int], *, frequency_penalty: float = 0.0,
                  presence_penalty: float = 0.0, logit_bias: tuple[tuple[int, float], ...] = ()) -> np.ndarray:
    """OpenAI's adjustments, applied before temperature and top-p (and to greedy decoding):
    logit[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty + logit_bias[j], where
    c[j] counts the times token j was generated so far in this choice. The row is not modified."""
    penalised = bool(generated) and bool(frequency_penalty or presence_penalty)
    if not (penalised or logit_bias):
        return logits
    out = logits.astype(np.float32, copy=True)
    if penalised:
        ids, counts = np.unique(np.asarray(generated, dtype=np.int64), return_counts=True)
        out[ids] -= counts * np.float32(frequency_penalty) + np.float32(presence_penalty)
    if logit_bias:
        bias = np.asarray(logit_bias, dtype=np.float64)
        out[bias[:, 0].astype(np.int64)] += bias[:, 1].astype(np.float32)
    return out


def token_logprobs(logits: np.ndarray, token: int, k: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The sampled token's log-probability under softmax(logits), and the k most likely tokens
    with theirs, best first (ties by token id): one log-sum-exp and one partition, O(V)."""
    row = logits.astype(np.float64, copy=False)
    top = row.max()
    # the exponentials in float32 (numpy's float64 exp is 10x slower), summed in float64
    lse = top + np.log(np.exp(logits.astype(np.float32, copy=False) - np.float32(top)).sum(dtype=np.float64))
    best: tuple[tuple[int, float], ...] = ()
    if k > 0:
        ids = np.argpartition(-row, k - 1)[:k] if k < row.size else np.arange(row.size)
        ids = ids[np.lexsort((ids, -row[ids]))]
        best = tuple((int(i), min(float(row[i] - lse), 0.0)) for i in ids)
    return min(float(row[token] - lse), 0.0), best


def top_k_only(logits: np.ndarray, k: int) -> np.ndarray:
    """The logits with all but the k largest set to -inf (tokens tied with the k-th are kept);
    k = 0, or at least the vocabulary, keeps all."""
    if k <= 0 or k >= logits.size:
        return logits
    return np.where(logits >= kth_largest(logits, k), logits, -np.inf)


# kth_largest's subsample: every 16th value
_STRIDE = 16


def kth_largest(x: np.ndarray, k: int) -> float:
    """The k-th largest value of x (k from 1), exactly. A partition of the whole vocabulary takes
    250 us; for a k well under its size, a threshold from a subsample's partition leaves a
    candidate set that (when it holds at least k values) holds the k-th largest, in 40 us."""
    n = x.size
    if k * 64 < n:
        sub = x[::_STRIDE]
        rank = min(sub.size, 2 * (k // _STRIDE) + 4)  # ~2k values of x pass this threshold
        threshold = np.partition(sub, sub.size - rank)[sub.size - rank]
        candidates = x[x >= threshold]
        if candidates.size >= k:
            return np.partition(candidates, candidates.size - k)[candidates.size - k]
    return np.partition(x, n - k)[n - k]


def sample(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator, top_k: int = 0) -> int:
    """One token id from a float logits vector: top-k, then temperature and top-p. temperature 0
    is greedy (argmax, no RNG used)."""
    if temperature < _MIN_TEMPERATURE:
        return int(np.argmax(logits))
    x = top_k_only(np.asarray(logits, dtype=np.float32), top_k)
    # float32: numpy's float64 exp is 10x slower, and a token's weight needs no more than 7 digits
    weights = np.exp((x - x.max()) / np.float32(temperature))
    if top_p < 1.0:
        ids, p = nucleus(weights / float(weights.sum(dtype=np.float64)), top_p)
        cum = np.cumsum(p, dtype=np.float64)
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        return int(ids[min(i, ids.size - 1)])
    return inverse_cdf(weights, rng.random())


# inverse_cdf's block: a vectorised sum per block, a running sum within one
_BLOCK = 1024


def inverse_cdf(weights: np.ndarray, u: float) -> int:
    """The first token whose running sum of weights passes u * their total (u in [0, 1)), that is
    a draw from weights / total. numpy's cumsum is sequential (160 us over 49k tokens, a 16-stream
    step's 2.5 ms): block sums, then one block's running sum, give the same token in 20 us."""
    n = weights.size
    full = n - n % _BLOCK
    sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if full < n:
        sums = np.append(sums, weights[full:].sum(dtype=np.float64))
    cum = np.cumsum(sums)
    target = u * cum[-1]
    b = int(np.searchsorted(cum, target, side="right"))
    if b >= cum.size:  # rounding: the target at the very end goes to the last block with weight
        b = int(np.flatnonzero(sums)[-1])
    block = weights[b * _BLOCK : (b + 1) * _BLOCK]
    inner = np.cumsum(block, dtype=np.float64)
    i = int(np.searchsorted(inner, target - (cum[b - 1] if b else 0.0), side="right"))
    if i >= block.size:  # the block's running sum rounded just below its pairwise sum
        i = int(np.flatnonzero(block)[-1])
    return b * _BLOCK + i
