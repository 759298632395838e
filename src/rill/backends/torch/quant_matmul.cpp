// Weight-only int8 and int4 matmuls for the torch backend on a CPU (quant.py packs the weights and
// calls these; kernels.py builds this file with kernels.cpp).
//
// Why: a decode step at a few sequences is bound by reading the weights, so 1-byte (int8) or
// half-byte (int4) weights are read 4x or 8x faster than float32 ones. And why our own: every
// output element is summed in one fixed order, whatever the number of rows, the row's place in
// the batch or the thread that computes it, so a token's logits do not depend on what else is in
// the step (oneDNN picks its blocking by row count).
//
// The math, exactly, for output n of row x: k runs in groups of G (G = K for int8's one scale a
// channel, 32 for int4). A group's partial sum is one float32 multiply-add chain from p = 0:
// int4, in k order, p = fma(x[k], float(q[k][n]), p); then, group after group from acc = 0,
// acc = fma(p, scale[g][n], fma(min[g][n], xsum[g], acc)) (weights scale * q + min, q in 0..15;
// xsum[g] the group's sum of x in k order, once per row).
// int8: x rounded to bf16 first (round_activations), and k taken in pairs, the odd one first:
// p = fma(x[k+1], q[k+1][n], p), then p = fma(x[k], q[k][n], p) (an odd K's last k pairs with a
// zero). That is what AVX512-BF16's dot-product instruction computes (each product of a bf16 and
// a small integer exact, each sum rounded), so where the CPU has it, many rows run through it at
// twice the multiply-adds of float32 FMAs, and elsewhere the float32 chains give the same bits.
// Then acc = fma(p, scale[n], 0). y = acc (+ bias[n]). Nothing in it depends on the other rows.
//
// Layout (quant.py): the output columns in tiles of 32; a tile's weights are k-major, one row of
// 32 columns after another: int8, 32 bytes a row; int4, 16 bytes a row (byte j: column j in the
// low nibble, column j + 16 in the high one). Scales (and int4's mins) float32 [tiles, K / G, 32].

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#define RILL_AVX512 1
#if defined(__AVX512BF16__)
#define RILL_BF16_DOT 1
#endif
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define RILL_AVX2 1
#endif

namespace {

constexpr int64_t kTile = 32;       // output columns per tile

enum class Format { kInt8, kInt4 };

constexpr int64_t row_bytes(Format f) { return f == Format::kInt8 ? kTile : kTile / 2; }

// What one call shares: x [M, K]; for int4, each row's sum over each group [M, K / G].
struct Operands {
  const float* x;
  const float* xsums;
  int64_t M, K, G;
  int64_t groups;  // K / G, kept: an integer division in the fold took half an int4 call's time
};

#ifdef RILL_AVX2
// One k row of a tile -> 4 vectors of 8 floats (columns 0-7, 8-15, 16-23, 24-31), unscaled.
template <Format F>
inline void convert_row(const uint8_t* row, __m256 w[4]) {
  if constexpr (F == Format::kInt8) {
    for (int j = 0; j < 4; ++j)
      w[j] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * j))));
  } else {  // 8 bytes -> 8 lanes; the low nibbles are columns 8i.., the high ones 16 + 8i..
    const __m256i mask = _mm256_set1_epi32(0x0f);
    for (int i = 0; i < 2; ++i) {
      const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + 8 * i)));
      w[i] = _mm256_cvtepi32_ps(_mm256_and_si256(b, mask));
      w[2 + i] = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(b, 4), mask));
    }
  }
}
#endif

#ifdef RILL_AVX512
// One k row of a tile -> 2 vectors of 16 floats (columns 0-15, 16-31), unscaled.
template <Format F>
inline void convert_row(const uint8_t* row, __m512 w[2]) {
  if constexpr (F == Format::kInt8) {
    for (int j = 0; j < 2; ++j)
      w[j] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + 16 * j))));
  } else {  // 16 bytes: the low nibbles are columns 0-15, the high ones 16-31
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row)));
    const __m512i mask = _mm512_set1_epi32(0x0f);
    w[0] = _mm512_cvtepi32_ps(_mm512_and_si512(b, mask));
    w[1] = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srli_epi32(b, 4), mask));
  }
}
#endif

// The same for one column: what runs without AVX2, and the definition of the values.
template <Format F>
inline float convert_one(const uint8_t* row, int64_t j) {
  if constexpr (F == Format::kInt8) return static_cast<float>(static_cast<int8_t>(row[j]));
  const uint8_t b = row[j & 15];
  return static_cast<float>(j < 16 ? (b & 0x0f) : (b >> 4));
}

// int8's k order (the top of this file): pairs, the odd one first; an odd K's last k pairs with a
// zero, so +0 is added first, as the dot product does. `step(k)` multiplies-adds one k.
template <typename Step, typename AddZero>
inline void int8_order(int64_t ka, int64_t kb, Step step, AddZero add_zero) {
  int64_t k = ka;
  for (; k + 1 < kb; k += 2) step(k + 1), step(k);
  if (k < kb) add_zero(), step(k);
}

// NR rows (from r0) of one tile over group g (k in [ka, kb)): the group's partial sums, then
// folded into acc. NR is a template argument so that the chains stay in registers (a runtime
// count kept them in memory: 3x slower). AVX2: two rows' 8 chains, 4 weight vectors and a
// broadcast fit its 16 registers; AVX-512: eight rows' 16 chains, 2 weight vectors and a
// broadcast fit its 32, so a converted weight serves 8 rows (its conversion, not the FMAs, was
// the cost). Each lane is one column's chain either way: the same bits on both.
template <Format F, int NR>
inline void group_rows(const Operands& o, const uint8_t* w, const float* scales, const float* mins, int64_t g, float* acc,
                       int64_t r0) {
  const int64_t ka = g * o.G, kb = ka + o.G;
#ifdef RILL_AVX512
  __m512 a[NR][2];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < 2; ++j) a[r][j] = _mm512_setzero_ps();
  const float* xr = o.x + r0 * o.K;
  auto step = [&](int64_t k) {
    __m512 v[2];
    convert_row<F>(w + k * row_bytes(F), v);
    for (int r = 0; r < NR; ++r) {
      const __m512 xb = _mm512_set1_ps(xr[r * o.K + k]);
      for (int j = 0; j < 2; ++j) a[r][j] = _mm512_fmadd_ps(xb, v[j], a[r][j]);
    }
  };
  if constexpr (F == Format::kInt8) {
    int8_order(ka, kb, step, [&] {
      for (int r = 0; r < NR; ++r)
        for (int j = 0; j < 2; ++j) a[r][j] = _mm512_add_ps(a[r][j], _mm512_setzero_ps());
    });
  } else {
    for (int64_t k = ka; k < kb; ++k) step(k);
  }
  alignas(64) float sums[NR][kTile];  // out of the registers before the fold (see AVX2's below)
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < 2; ++j) _mm512_store_ps(sums[r] + 16 * j, a[r][j]);
  for (int r = 0; r < NR; ++r) {
    float* ar = acc + (r0 + r) * kTile;
    const __m512 xsum = F == Format::kInt4 ? _mm512_set1_ps(o.xsums[(r0 + r) * o.groups + g]) : _mm512_setzero_ps();
    for (int j = 0; j < 2; ++j) {
      __m512 before = _mm512_loadu_ps(ar + 16 * j);
      if constexpr (F == Format::kInt4) before = _mm512_fmadd_ps(_mm512_loadu_ps(mins + g * kTile + 16 * j), xsum, before);
      _mm512_storeu_ps(ar + 16 * j, _mm512_fmadd_ps(_mm512_load_ps(sums[r] + 16 * j), _mm512_loadu_ps(scales + g * kTile + 16 * j), before));
    }
  }
#elif defined(RILL_AVX2)
  __m256 a[NR][4];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < 4; ++j) a[r][j] = _mm256_setzero_ps();
  const float* xr = o.x + r0 * o.K;
  auto step = [&](int64_t k) {
    __m256 v[4];
    convert_row<F>(w + k * row_bytes(F), v);
    for (int r = 0; r < NR; ++r) {
      const __m256 xb = _mm256_broadcast_ss(xr + r * o.K + k);
      for (int j = 0; j < 4; ++j) a[r][j] = _mm256_fmadd_ps(xb, v[j], a[r][j]);
    }
  };
  if constexpr (F == Format::kInt8) {
    int8_order(ka, kb, step, [&] {
      for (int r = 0; r < NR; ++r)
        for (int j = 0; j < 4; ++j) a[r][j] = _mm256_add_ps(a[r][j], _mm256_setzero_ps());
    });
  } else {
    for (int64_t k = ka; k < kb; ++k) step(k);
  }
  // the sums leave the registers before the fold: folding from them kept GCC storing all eight
  // chains to the stack on every k (int4: 2x slower)
  alignas(32) float sums[NR][kTile];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < 4; ++j) _mm256_store_ps(sums[r] + 8 * j, a[r][j]);
  for (int r = 0; r < NR; ++r) {
    float* ar = acc + (r0 + r) * kTile;
    const __m256 xsum = F == Format::kInt4 ? _mm256_set1_ps(o.xsums[(r0 + r) * o.groups + g]) : _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      __m256 before = _mm256_loadu_ps(ar + 8 * j);
      if constexpr (F == Format::kInt4) before = _mm256_fmadd_ps(_mm256_loadu_ps(mins + g * kTile + 8 * j), xsum, before);
      _mm256_storeu_ps(ar + 8 * j, _mm256_fmadd_ps(_mm256_load_ps(sums[r] + 8 * j), _mm256_loadu_ps(scales + g * kTile + 8 * j), before));
    }
  }
#else
  for (int64_t r = r0; r < r0 + NR; ++r)
    for (int64_t j = 0; j < kTile; ++j) {
      float p = 0.f;
      auto step = [&](int64_t k) { p = std::fma(o.x[r * o.K + k], convert_one<F>(w + k * row_bytes(F), j), p); };
      if constexpr (F == Format::kInt8) {
        int8_order(ka, kb, step, [&] { p += 0.f; });
      } else {
        for (int64_t k = ka; k < kb; ++k) step(k);
      }
      float before = acc[r * kTile + j];
      if constexpr (F == Format::kInt4) before = std::fma(mins[g * kTile + j], o.xsums[r * o.groups + g], before);
      acc[r * kTile + j] = std::fma(p, scales[g * kTile + j], before);
    }
#endif
}

// Every row over every tile, kRows rows at a time (then 4, 2, 1 for the rest), each tile read
// again (from the cache) for each block of rows. A variant that first converted a tile's chunk of
// k into a float buffer shared by all the rows was slower at every row count measured (1 to 256)
// on an AVX2 Zen 3.
#ifdef RILL_AVX512
constexpr int64_t kRows = 8;
#else
constexpr int64_t kRows = 2;
#endif

template <Format F, int NR>
inline int64_t row_blocks(const Operands& o, const uint8_t* w, const float* s, const float* m, float* acc, int64_t r0) {
  for (; r0 + NR <= o.M; r0 += NR)  // a block's rows of x are read in k order, group after group
    for (int64_t g = 0; g < o.groups; ++g) group_rows<F, NR>(o, w, s, m, g, acc, r0);
  return r0;
}

// Tile t's results, acc [M, 32], into columns 32t.. of y [M, N] (the last tile may be cut short).
inline void store_tile(const float* acc, int64_t M, int64_t t, float* y, int64_t N) {
  const int64_t n0 = t * kTile, cols = std::min(kTile, N - n0);
  for (int64_t r = 0; r < M; ++r) std::memcpy(y + r * N + n0, acc + r * kTile, cols * sizeof(float));
}

template <Format F>
void run(const Operands& o, const uint8_t* packed, const float* scales, const float* mins, int64_t tiles, float* y,
         int64_t N) {
  const int64_t M = o.M, groups = o.groups, tile_bytes = o.K * row_bytes(F);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(M * kTile);
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* w = packed + t * tile_bytes;
      const float* s = scales + t * groups * kTile;
      const float* m = mins ? mins + t * groups * kTile : nullptr;
      std::fill(acc.begin(), acc.end(), 0.f);
      int64_t r0 = row_blocks<F, kRows>(o, w, s, m, acc.data(), 0);
      if constexpr (kRows > 4) r0 = row_blocks<F, 4>(o, w, s, m, acc.data(), r0);
      r0 = row_blocks<F, 2>(o, w, s, m, acc.data(), r0);
      row_blocks<F, 1>(o, w, s, m, acc.data(), r0);
      store_tile(acc.data(), M, t, y, N);
    }
  });
}

// int8's activations: x rounded to bf16 (to nearest even), kept as float32. Magnitudes below
// 2^-100 become zero: then every nonzero product, partial sum and rounding in a chain is a
// multiple of 2^-107, never subnormal, where the dot-product instruction would flush it to zero.
inline float round_activation(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  if ((b & 0x7f800000u) == 0x7f800000u) {  // infinities stay, a NaN stays a (quiet) NaN
    if (b & 0x007fffffu) b |= 0x00400000u;
  } else if (std::fabs(v) < 0x1p-100f) {
    b &= 0x80000000u;
  } else {
    b += 0x7fffu + ((b >> 16) & 1u);
  }
  b &= 0xffff0000u;
  std::memcpy(&v, &b, 4);
  return v;
}

// round_activation over n values (in place), 16 at a time where AVX-512 is at hand: the same bits.
inline void round_activations(float* x, int64_t n) {
  int64_t i = 0;
#ifdef RILL_AVX512
  const __m512i exponent = _mm512_set1_epi32(0x7f800000), mantissa = _mm512_set1_epi32(0x007fffff);
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff), tiny = _mm512_set1_epi32(0x0d800000);  // 2^-100
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u)), quiet = _mm512_set1_epi32(0x00400000);
  const __m512i half = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), upper = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (; i + 16 <= n; i += 16) {
    const __m512i b = _mm512_loadu_si512(x + i);
    const __mmask16 special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(b, exponent), exponent);
    const __mmask16 nan = special & _mm512_test_epi32_mask(b, mantissa);
    const __mmask16 small = _mm512_cmplt_epu32_mask(_mm512_and_si512(b, magnitude), tiny);
    __m512i r = _mm512_add_epi32(b, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(b, 16), one)));
    r = _mm512_mask_mov_epi32(r, special, _mm512_mask_or_epi32(b, nan, b, quiet));
    r = _mm512_mask_mov_epi32(r, small, _mm512_and_si512(b, sign));
    _mm512_storeu_si512(x + i, _mm512_and_si512(r, upper));
  }
#endif
  for (; i < n; ++i) x[i] = round_activation(x[i]);
}

#ifdef RILL_BF16_DOT
// int8 for many rows through VDPBF16PS. A tile's weights are widened once per call into bf16
// pairs (lane n of vector 2p + j: column 16j + n, k = 2p in the low half, 2p + 1 in the high one;
// an int8 value is exact in bf16), each row's x into bf16 pairs likewise; the instruction then
// adds x[k+1] * w[k+1][n], then x[k] * w[k][n], to lane n: group_rows' int8 chain, in half the
// instructions and with no conversion in the loop. Below kDotRows rows the widening costs more
// than it saves.
constexpr int64_t kDotRows = 8;

inline void widen_tile(const uint8_t* w, int64_t K, __m512i* wb) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  auto load = [&](int64_t k, int j) {
    if (k >= K) return _mm512_setzero_si512();  // an odd K's last pair: a zero weight
    const __m512 f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k * kTile + 16 * j))));
    return _mm512_castps_si512(f);  // an integer this small: its bf16 is its float's upper half
  };
  for (int64_t p = 0; p < (K + 1) / 2; ++p)
    for (int j = 0; j < 2; ++j)
      wb[2 * p + j] = _mm512_or_si512(_mm512_srli_epi32(load(2 * p, j), 16), _mm512_and_si512(load(2 * p + 1, j), high));
}

template <int NR>
inline int64_t dot_rows(const uint32_t* xp, int64_t pairs, int64_t M, const __m512i* wb, const float* scales, float* acc,
                        int64_t r0) {
  for (; r0 + NR <= M; r0 += NR) {
    __m512 a[NR][2];
    for (int r = 0; r < NR; ++r)
      for (int j = 0; j < 2; ++j) a[r][j] = _mm512_setzero_ps();
    const uint32_t* xr = xp + r0 * pairs;
    for (int64_t p = 0; p < pairs; ++p) {
      const __m512bh w0 = (__m512bh)wb[2 * p], w1 = (__m512bh)wb[2 * p + 1];
      for (int r = 0; r < NR; ++r) {
        const __m512bh xb = (__m512bh)_mm512_set1_epi32(static_cast<int>(xr[r * pairs + p]));
        a[r][0] = _mm512_dpbf16_ps(a[r][0], xb, w0);
        a[r][1] = _mm512_dpbf16_ps(a[r][1], xb, w1);
      }
    }
    for (int r = 0; r < NR; ++r)  // the fold, as group_rows makes it from acc = 0
      for (int j = 0; j < 2; ++j)
        _mm512_storeu_ps(acc + (r0 + r) * kTile + 16 * j,
                         _mm512_fmadd_ps(a[r][j], _mm512_loadu_ps(scales + 16 * j), _mm512_setzero_ps()));
  }
  return r0;
}

// x [M, K] float32, not yet rounded: each row rounded (round_activations) and packed into bf16
// pairs in one pass, rows split between the threads.
void run_dot(const float* x, int64_t M, int64_t K, const uint8_t* packed, const float* scales, int64_t tiles, float* y,
             int64_t N) {
  const int64_t pairs = (K + 1) / 2;
  std::vector<uint32_t> xp(M * pairs);
  at::parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(K);
    for (int64_t r = begin; r < end; ++r) {  // once rounded, taking the values' upper halves is exact
      std::copy_n(x + r * K, K, row.data());
      round_activations(row.data(), K);
      uint32_t* prow = xp.data() + r * pairs;
      int64_t p = 0;
      for (; 2 * p + 32 <= K; p += 16)  // element 2j of the bf16 vector, x[2p + 2j], in lane j's low half
        _mm512_storeu_si512(prow + p, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(row.data() + 2 * p + 16),
                                                                  _mm512_loadu_ps(row.data() + 2 * p)));
      for (; p < pairs; ++p) {
        uint32_t lo, hi = 0;
        std::memcpy(&lo, row.data() + 2 * p, 4);
        if (2 * p + 1 < K) std::memcpy(&hi, row.data() + 2 * p + 1, 4);
        prow[p] = (hi & 0xffff0000u) | (lo >> 16);
      }
    }
  });
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(M * kTile);
    std::vector<__m512i> wb(2 * pairs);
    for (int64_t t = begin; t < end; ++t) {
      widen_tile(packed + t * K * kTile, K, wb.data());
      const float* s = scales + t * kTile;
      int64_t r0 = dot_rows<8>(xp.data(), pairs, M, wb.data(), s, acc.data(), 0);
      r0 = dot_rows<4>(xp.data(), pairs, M, wb.data(), s, acc.data(), r0);
      r0 = dot_rows<2>(xp.data(), pairs, M, wb.data(), s, acc.data(), r0);
      dot_rows<1>(xp.data(), pairs, M, wb.data(), s, acc.data(), r0);
      store_tile(acc.data(), M, t, y, N);
    }
  });
}
#endif

// x [M, K] (any float dtype); packed uint8 [tiles, K, 32] (int8) or [tiles, K, 16] (int4);
// scales, and int4's mins, float32 [tiles, K / group, 32]; -> [M, out_features] in x's dtype.
at::Tensor quant_linear(const at::Tensor& x_in, const at::Tensor& packed, const at::Tensor& scales,
                        const c10::optional<at::Tensor>& mins, const c10::optional<at::Tensor>& bias,
                        int64_t out_features, int64_t group, int64_t bits) {
  TORCH_CHECK(x_in.dim() == 2, "x must be [rows, K]");
  TORCH_CHECK(bits == 8 || bits == 4, "bits must be 8 or 4");
  TORCH_CHECK(packed.dim() == 3 && packed.scalar_type() == at::kByte && packed.is_contiguous(), "packed must be uint8 [tiles, K, .]");
  const Format f = bits == 8 ? Format::kInt8 : Format::kInt4;
  const int64_t M = x_in.size(0), K = x_in.size(1), tiles = packed.size(0);
  TORCH_CHECK(packed.size(1) == K && packed.size(2) == row_bytes(f), "packed weights do not match x's K or the format");
  TORCH_CHECK(group > 0 && K % group == 0, "the group must divide K");
  TORCH_CHECK(bits == 4 || group == K, "int8 weights have one scale a channel (group = K)");
  TORCH_CHECK(scales.scalar_type() == at::kFloat && scales.is_contiguous() && scales.numel() == tiles * (K / group) * kTile,
              "scales must be float32 [tiles, K / group, 32]");
  TORCH_CHECK(mins.has_value() == (bits == 4), "int4 weights, and only they, have mins");
  TORCH_CHECK(!mins.has_value() || (mins->scalar_type() == at::kFloat && mins->is_contiguous() &&
                                    mins->numel() == scales.numel()), "mins must be shaped as the scales");
  TORCH_CHECK(out_features > (tiles - 1) * kTile && out_features <= tiles * kTile, "out_features does not match the tiles");
  const auto x = x_in.to(at::kFloat).contiguous();
  auto y = at::empty({M, out_features}, x.options());
  if (M > 0) {
    const uint8_t* w = packed.data_ptr<uint8_t>();
    const float* xp = x.data_ptr<float>();
    std::vector<float> xsums;
    if (f == Format::kInt4) {  // each group's sum of the row, in k order
      xsums.resize(M * (K / group));
      for (int64_t r = 0; r < M; ++r)
        for (int64_t g = 0; g < K / group; ++g) {
          float sum = 0.f;
          for (int64_t k = g * group; k < (g + 1) * group; ++k) sum += xp[r * K + k];
          xsums[r * (K / group) + g] = sum;
        }
    }
    if (f == Format::kInt8) {
#ifdef RILL_BF16_DOT
      if (M >= kDotRows) {
        run_dot(xp, M, K, w, scales.data_ptr<float>(), tiles, y.data_ptr<float>(), out_features);
      } else
#endif
      {
        std::vector<float> xr(xp, xp + M * K);
        round_activations(xr.data(), M * K);
        const Operands o{xr.data(), nullptr, M, K, group, 1};
        run<Format::kInt8>(o, w, scales.data_ptr<float>(), nullptr, tiles, y.data_ptr<float>(), out_features);
      }
    } else {
      const Operands o{xp, xsums.data(), M, K, group, K / group};
      run<Format::kInt4>(o, w, scales.data_ptr<float>(), mins->data_ptr<float>(), tiles, y.data_ptr<float>(), out_features);
    }
  }
  if (bias.has_value()) y.add_(bias->to(at::kFloat));
  return x_in.scalar_type() == at::kFloat ? y : y.to(x_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(rill_kernels, m) {
  m.def("quant_linear(Tensor x, Tensor packed, Tensor scales, Tensor? mins, Tensor? bias, int out_features, int group, "
        "int bits) -> Tensor",
        &quant_linear);
}
