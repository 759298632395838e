// Fused CPU kernels for the torch backend (see kernels.py, which builds this file once per machine).
//
// A decode step of a small model on a CPU spends more time between its matmuls than in them: some
// sixty small PyTorch ops a layer, each a dispatch and a pass over memory, and an attention that
// first gathers every sequence's keys out of the paged cache. These four kernels do that work in
// one pass each, in float32 whatever the storage type, parallel over the step's rows with ATen's
// thread pool; the matmuls stay oneDNN's. kernels.py holds the same four operations written in
// PyTorch: the reference these are tested against, and what runs where this file cannot be built.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

// the storage types a model runs in: float32, bf16, fp16
#define RILL_DISPATCH(TYPE, NAME, ...)                      \
  AT_DISPATCH_SWITCH(TYPE, NAME,                            \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__))

namespace {

constexpr int kLanes = 16;  // one AVX-512 register of floats: the compiler vectorises these loops
// kLanes floats as one value (GCC/Clang vector extension; lowered to whatever the CPU has), any
// alignment: the buffers are std::vectors
typedef float vfloat __attribute__((vector_size(kLanes * sizeof(float)), aligned(alignof(float))));
#ifndef __AVX512F__
// Without AVX-512 GCC lowers vfloat to pairs of 256-bit registers but keeps the accumulators of the
// attention loops on the stack (prefill attention ran 30x under the FMA units' rate on an AVX2
// Zen 3): those loops work on halves of a block instead.
typedef float vhalf __attribute__((vector_size(kLanes / 2 * sizeof(float)), aligned(alignof(float))));
#endif

// Storage -> float32. bf16 is the top half of a float32: a shift, which vectorises.
inline void load_float(const float* src, float* dst, int64_t n) { std::copy(src, src + n, dst); }
inline void load_float(const at::BFloat16* src, float* dst, int64_t n) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  uint32_t* d = reinterpret_cast<uint32_t*>(dst);
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<uint32_t>(s[i]) << 16;
}
inline void load_float(const at::Half* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

// float32 -> storage, rounding to nearest even (as PyTorch's conversions do).
inline void store_float(const float* src, float* dst, int64_t n) { std::copy(src, src + n, dst); }
inline void store_float(const float* src, at::BFloat16* dst, int64_t n) {
  const uint32_t* s = reinterpret_cast<const uint32_t*>(src);
  uint16_t* d = reinterpret_cast<uint16_t*>(dst);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = s[i];
    const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
    d[i] = nan ? 0x7fc0 : static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
}
inline void store_float(const float* src, at::Half* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<at::Half>(src[i]);
}

// n values as float32: float storage in place (no copy: a prompt's rows read every block of
// their sequence, and copying them took most of a prefill's attention), others converted into buf.
inline const float* as_float(const float* src, float* buf, int64_t n) { return src; }
template <typename T>
inline const float* as_float(const T* src, float* buf, int64_t n) {
  load_float(src, buf, n);
  return buf;
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc[kLanes] = {0.f};
  int64_t d = 0;
  for (; d + kLanes <= n; d += kLanes)
    for (int i = 0; i < kLanes; ++i) acc[i] += a[d + i] * b[d + i];
  float sum = 0.f;
  for (int i = 0; i < kLanes; ++i) sum += acc[i];
  for (; d < n; ++d) sum += a[d] * b[d];
  return sum;
}

inline float sum_of_squares(const float* x, int64_t n) { return dot(x, x, n); }

// A sum and a maximum in kLanes independent lanes (a float reduction in one does not vectorise).
inline float lane_sum(const float* x, int64_t n) {
  float acc[kLanes] = {0.f};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += x[i + j];
  float sum = 0.f;
  for (int j = 0; j < kLanes; ++j) sum += acc[j];
  for (; i < n; ++i) sum += x[i];
  return sum;
}
inline float lane_max(const float* x, int64_t n) {
  float acc[kLanes];
  std::fill(acc, acc + kLanes, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] = std::max(acc[j], x[i + j]);
  float top = *std::max_element(acc, acc + kLanes);
  for (; i < n; ++i) top = std::max(top, x[i]);
  return top;
}

// exp(x) for x in float32's range, branch-free so that loops over it vectorise (std::exp does
// not): x = n ln2 + r, exp(r) by a degree-6 Taylor polynomial on |r| <= ln2/2 (relative error
// under 2e-7), times 2^n built in the exponent bits.
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round to nearest: 1.5 * 2^23
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187e-06f;  // ln2 in two parts
  float p = 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// A cache holds the activations' dtype, or a narrower one beside float32 activations (int8/int4
// weights compute in float32 and keep a bf16 cache: half the memory, rounded once when stored).
void check_cache(const at::Tensor& cache, const at::Tensor& like, const char* name) {
  TORCH_CHECK(cache.dim() == 4 && cache.is_contiguous(), name, " must be a contiguous [blocks, heads, ., .] tensor");
  TORCH_CHECK(cache.scalar_type() == like.scalar_type() || like.scalar_type() == at::kFloat, name,
              " must have the activations' dtype (or any beside float32 activations)");
}

// Scores of up to four query heads for one block of kLanes keys, stored dim-major ([D][kLanes]):
// D vector multiply-adds a head, each key in its own lane, no horizontal sums; the keys are
// loaded once for all the heads.
template <int NG>
inline void block_scores(const float* q, int64_t D, const float* keys_t, float* out, int64_t out_stride) {
#ifndef __AVX512F__
  const vhalf* kh = reinterpret_cast<const vhalf*>(keys_t);  // [D][2] halves of the block's keys
  vhalf h[NG][2] = {};  // a chain per head and half: 2 NG chains hide a multiply-add's latency
  for (int64_t d = 0; d < D; ++d)
    for (int j = 0; j < NG; ++j) {
      h[j][0] += q[j * D + d] * kh[2 * d];
      h[j][1] += q[j * D + d] * kh[2 * d + 1];
    }
  for (int j = 0; j < NG; ++j) {
    std::memcpy(out + j * out_stride, &h[j][0], sizeof(vhalf));
    std::memcpy(out + j * out_stride + kLanes / 2, &h[j][1], sizeof(vhalf));
  }
  return;
#endif
  const vfloat* k = reinterpret_cast<const vfloat*>(keys_t);
  vfloat s[NG][2] = {};  // two chains a head: a multiply-add's latency would otherwise serialise them
  int64_t d = 0;
  for (; d + 1 < D; d += 2)
    for (int j = 0; j < NG; ++j) {
      s[j][0] += q[j * D + d] * k[d];
      s[j][1] += q[j * D + d + 1] * k[d + 1];
    }
  for (; d < D; ++d)
    for (int j = 0; j < NG; ++j) s[j][0] += q[j * D + d] * k[d];
  for (int j = 0; j < NG; ++j) {
    const vfloat sum = s[j][0] + s[j][1];
    std::memcpy(out + j * out_stride, &sum, sizeof(vfloat));
  }
}

// acc[g] += the block's rows weighted by p[g][row], a head at a time: its NV vector accumulators
// (D = NV * kLanes) stay in registers over the block's rows.
template <int NV>
inline void weighted_rows(float* acc, const float* rows, const float* p, int64_t p_stride, int64_t num_rows, int64_t G) {
#ifndef __AVX512F__
  const vhalf* vh = reinterpret_cast<const vhalf*>(rows);
  for (int64_t g = 0; g < G; ++g) {
    vhalf a[2 * NV];
    std::memcpy(a, acc + g * NV * kLanes, sizeof a);
    const float* pg = p + g * p_stride;
    for (int64_t r = 0; r < num_rows; ++r)
      for (int j = 0; j < 2 * NV; ++j) a[j] += pg[r] * vh[r * 2 * NV + j];
    std::memcpy(acc + g * NV * kLanes, a, sizeof a);
  }
  return;
#endif
  const vfloat* v = reinterpret_cast<const vfloat*>(rows);
  for (int64_t g = 0; g < G; ++g) {
    vfloat a[NV];
    std::memcpy(a, acc + g * NV * kLanes, sizeof a);
    const float* pg = p + g * p_stride;
    for (int64_t r = 0; r < num_rows; ++r)
      for (int j = 0; j < NV; ++j) a[j] += pg[r] * v[r * NV + j];
    std::memcpy(acc + g * NV * kLanes, a, sizeof a);
  }
}

// Consecutive rows with the same block table (a prompt's rows, each up to its own position) as
// (first row, count) groups of at most kRowGroup: attention widens each block of keys and values to
// float once for a group instead of once a row, and reads a key vector once for four (row, head)
// pairs. Each row's own arithmetic is what it is alone (every score and sum is its own chain), so
// a row's output does not depend on its group.
constexpr int64_t kRowGroup = 8;

std::vector<std::pair<int64_t, int64_t>> row_groups(const int64_t* table, const int64_t* length, int64_t B, int64_t W) {
  std::vector<std::pair<int64_t, int64_t>> groups;
  for (int64_t b = 0; b < B; ++b) {
    if (!groups.empty()) {
      auto& [first, count] = groups.back();
      if (count < kRowGroup && std::equal(table + b * W, table + (b + 1) * W, table + first * W)) {
        ++count;
        continue;
      }
    }
    groups.emplace_back(b, 1);
  }
  return groups;
}

// q [B, H, D]; keys [blocks, KVH, D, BS] (dim-major within a block), values [blocks, KVH, BS, D];
// tables [B, W] block ids; lengths [B] keys per sequence. Each (sequence, key head) is one
// task: its query heads' scores over the sequence's keys, read block by block where they lie,
// a softmax, and the weighted sum of its values.
at::Tensor decode_attention(const at::Tensor& q_in, const at::Tensor& k_cache, const at::Tensor& v_cache,
                            const at::Tensor& tables_in, const at::Tensor& lengths_in, double scale) {
  TORCH_CHECK(q_in.dim() == 3, "q must be [sequences, heads, dim]");
  check_cache(k_cache, q_in, "k_cache");
  check_cache(v_cache, q_in, "v_cache");
  const auto q = q_in.contiguous();
  const auto tables = tables_in.to(at::kLong).contiguous();
  const auto lengths = lengths_in.to(at::kLong).contiguous();
  const int64_t B = q.size(0), H = q.size(1), D = q.size(2);
  const int64_t KVH = v_cache.size(1), BS = v_cache.size(2), W = tables.size(1);
  TORCH_CHECK(v_cache.size(3) == D && k_cache.size(2) == D && k_cache.size(3) == BS && H % KVH == 0,
              "q and the caches disagree on heads, dim or block size");
  TORCH_CHECK(tables.size(0) == B && lengths.size(0) == B, "one block table and length per sequence");
  const int64_t G = H / KVH;
  const bool lanes = BS == kLanes;  // the vector path; any other block size works lane by lane
  auto out = at::empty_like(q);
  const int64_t* table = tables.data_ptr<int64_t>();
  const int64_t* length = lengths.data_ptr<int64_t>();
  RILL_DISPATCH(q.scalar_type(), "rill_decode_attention", [&] {
   using act_t = scalar_t;
   RILL_DISPATCH(k_cache.scalar_type(), "rill_decode_attention", [&] {
    using cache_t = scalar_t;
    TORCH_CHECK(v_cache.scalar_type() == k_cache.scalar_type(), "k_cache and v_cache must have one dtype");
    const act_t* qp = q.data_ptr<act_t>();
    const cache_t* kp = k_cache.data_ptr<cache_t>();
    const cache_t* vp = v_cache.data_ptr<cache_t>();
    act_t* op = out.data_ptr<act_t>();
    const auto groups = row_groups(table, length, B, W);
    at::parallel_for(0, static_cast<int64_t>(groups.size()) * KVH, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> qf, acc, block(BS * D), scores, tile(4 * kLanes);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b0 = groups[task / KVH].first, R = groups[task / KVH].second, kh = task % KVH;
        const int64_t* L = length + b0;  // row r of the group attends to its first L[r] keys
        int64_t Lmax = 0;
        for (int64_t r = 0; r < R; ++r) {
          TORCH_CHECK(L[r] > 0 && L[r] <= W * BS, "sequence ", b0 + r, " has ", L[r], " keys, its table holds ", W * BS);
          Lmax = std::max(Lmax, L[r]);
        }
        // the group's (row, head) pairs in order: pair i = r * G + g, its query at qf[i * D],
        // its scores at scores[i * Lmax], its output at acc[i * D]
        qf.resize(R * G * D);
        acc.assign(R * G * D, 0.f);
        scores.resize(R * G * Lmax);
        for (int64_t r = 0; r < R; ++r) load_float(qp + ((b0 + r) * H + kh * G) * D, &qf[r * G * D], G * D);
        for (float& x : qf) x *= static_cast<float>(scale);
        const int64_t* blocks = table + b0 * W;
        for (int64_t first = 0; first < Lmax; first += BS) {  // a block of keys at a time, as float
          const float* keys = as_float(kp + (blocks[first / BS] * KVH + kh) * D * BS, block.data(), D * BS);
          for (int64_t r0 = 0; r0 < R;) {  // runs of rows that reach into this block
            if (L[r0] <= first) { ++r0; continue; }
            int64_t r1 = r0;
            while (r1 < R && L[r1] > first) ++r1;
            for (int64_t i = r0 * G; i < r1 * G; i += 4) {
              const int64_t n = std::min<int64_t>(4, r1 * G - i);
              if (lanes) {
                const float* qi = &qf[i * D];
                switch (n) {
                  case 1: block_scores<1>(qi, D, keys, tile.data(), kLanes); break;
                  case 2: block_scores<2>(qi, D, keys, tile.data(), kLanes); break;
                  case 3: block_scores<3>(qi, D, keys, tile.data(), kLanes); break;
                  default: block_scores<4>(qi, D, keys, tile.data(), kLanes);
                }
                for (int64_t j = 0; j < n; ++j)  // the lanes past the row's keys are dropped
                  std::copy_n(&tile[j * kLanes], std::min(BS, L[(i + j) / G] - first), &scores[(i + j) * Lmax + first]);
              } else {
                for (int64_t j = i; j < i + n; ++j)
                  for (int64_t k = 0; k < std::min(BS, L[j / G] - first); ++k) {
                    float sum = 0.f;
                    for (int64_t d = 0; d < D; ++d) sum += qf[j * D + d] * keys[d * BS + k];
                    scores[j * Lmax + first + k] = sum;
                  }
              }
            }
            r0 = r1;
          }
        }
        for (int64_t i = 0; i < R * G; ++i) {  // softmax, in place, over the row's own keys
          float* s = &scores[i * Lmax];
          const int64_t n = L[i / G];
          const float top = lane_max(s, n);
          for (int64_t l = 0; l < n; ++l) s[l] = fast_exp(s[l] - top);
          const float inv = 1.f / lane_sum(s, n);
          for (int64_t l = 0; l < n; ++l) s[l] *= inv;
        }
        for (int64_t first = 0; first < Lmax; first += BS) {
          const float* values = as_float(vp + (blocks[first / BS] * KVH + kh) * BS * D, block.data(),
                                         std::min(BS, Lmax - first) * D);
          for (int64_t r = 0; r < R; ++r) {
            if (L[r] <= first) continue;
            const int64_t rows = std::min(BS, L[r] - first);
            float* ar = &acc[r * G * D];
            const float* p = &scores[r * G * Lmax + first];
            if (D == 4 * kLanes) {
              weighted_rows<4>(ar, values, p, Lmax, rows, G);
            } else if (D == 8 * kLanes) {
              weighted_rows<8>(ar, values, p, Lmax, rows, G);
            } else {
              for (int64_t k = 0; k < rows; ++k)
                for (int64_t g = 0; g < G; ++g) {
                  const float pk = p[g * Lmax + k];
                  for (int64_t d = 0; d < D; ++d) ar[g * D + d] += pk * values[k * D + d];
                }
            }
          }
        }
        for (int64_t r = 0; r < R; ++r) store_float(&acc[r * G * D], op + ((b0 + r) * H + kh * G) * D, G * D);
      }
    });
   });
  });
  return out;
}

// qkv [N, (H + 2 KVH) * D] from the fused projection; cos, sin [positions, D] float32 tables in
// the half-split form (sin negated on the first half): x' = x * cos + roll(x, D/2) * sin.
// Optional per-head RMSNorm of q and k first (Qwen3). Writes every token's rotated key and its
// value to the paged cache at its slot (block * BS + offset; keys [blocks, KVH, D, BS], values
// [blocks, KVH, BS, D]); returns the rotated queries and keys [N, H + KVH, D].
at::Tensor rope_store(const at::Tensor& qkv_in, const at::Tensor& cos, const at::Tensor& sin,
                      const at::Tensor& positions_in, const at::Tensor& slots_in, at::Tensor k_cache,
                      at::Tensor v_cache, int64_t num_heads, const c10::optional<at::Tensor>& q_norm,
                      const c10::optional<at::Tensor>& k_norm, double eps) {
  check_cache(k_cache, qkv_in, "k_cache");
  check_cache(v_cache, qkv_in, "v_cache");
  TORCH_CHECK(k_cache.size(2) == v_cache.size(3) && k_cache.size(3) == v_cache.size(2), "keys are [blocks, KVH, D, BS]");
  TORCH_CHECK(cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat, "rotary tables must be float32");
  const auto qkv = qkv_in.contiguous();
  const auto positions = positions_in.to(at::kLong).contiguous();
  const auto slots = slots_in.to(at::kLong).contiguous();
  const auto cosc = cos.contiguous(), sinc = sin.contiguous();
  const int64_t N = qkv.size(0), KVH = v_cache.size(1), BS = v_cache.size(2), D = v_cache.size(3);
  const int64_t H = num_heads;
  TORCH_CHECK(qkv.size(1) == (H + 2 * KVH) * D, "qkv has ", qkv.size(1), " columns, expected ", (H + 2 * KVH) * D);
  TORCH_CHECK(positions.size(0) == N && slots.size(0) == N, "one position and slot per token");
  const bool normed = q_norm.has_value() && k_norm.has_value();
  at::Tensor qn, kn;
  if (normed) {
    qn = q_norm->to(at::kFloat).contiguous();
    kn = k_norm->to(at::kFloat).contiguous();
  }
  auto qk = at::empty({N, H + KVH, D}, qkv.options());
  const int64_t* pos = positions.data_ptr<int64_t>();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const float* ct = cosc.data_ptr<float>();
  const float* st = sinc.data_ptr<float>();
  const int64_t half = D / 2;
  RILL_DISPATCH(qkv.scalar_type(), "rill_rope_store", [&] {
   using act_t = scalar_t;
   RILL_DISPATCH(k_cache.scalar_type(), "rill_rope_store", [&] {
    using cache_t = scalar_t;
    using scalar_t = act_t;
    TORCH_CHECK(v_cache.scalar_type() == k_cache.scalar_type(), "k_cache and v_cache must have one dtype");
    const scalar_t* src = qkv.data_ptr<scalar_t>();
    scalar_t* qkp = qk.data_ptr<scalar_t>();
    cache_t* kp = k_cache.data_ptr<cache_t>();
    cache_t* vp = v_cache.data_ptr<cache_t>();
    const float* qw = normed ? qn.data_ptr<float>() : nullptr;
    const float* kw = normed ? kn.data_ptr<float>() : nullptr;
    at::parallel_for(0, N, 16, [&](int64_t begin, int64_t end) {
      std::vector<float> x(D), y(D);
      std::vector<scalar_t> tmp(D);
      for (int64_t n = begin; n < end; ++n) {
        const float* c = ct + pos[n] * D;
        const float* s = st + pos[n] * D;
        const int64_t block = slot[n] / BS, offset = slot[n] % BS;
        for (int64_t h = 0; h < H + KVH; ++h) {
          const scalar_t* in = src + (n * (H + 2 * KVH) + h) * D;
          load_float(in, x.data(), D);
          if (normed) {  // rounded to the storage type, as the PyTorch norm's output would be
            const float* w = h < H ? qw : kw;
            const float r = 1.f / std::sqrt(sum_of_squares(x.data(), D) / D + static_cast<float>(eps));
            for (int64_t d = 0; d < D; ++d) y[d] = x[d] * r * w[d];
            store_float(y.data(), tmp.data(), D);
            load_float(tmp.data(), x.data(), D);
          }
          for (int64_t d = 0; d < half; ++d) {
            y[d] = x[d] * c[d] + x[d + half] * s[d];
            y[d + half] = x[d + half] * c[d + half] + x[d] * s[d + half];
          }
          scalar_t* rotated = qkp + (n * (H + KVH) + h) * D;
          store_float(y.data(), rotated, D);
          if (h >= H) {  // keys are stored dim-major within their block: one column of it
            cache_t* column = kp + (block * KVH + (h - H)) * D * BS + offset;
            for (int64_t d = 0; d < D; ++d) column[d * BS] = static_cast<cache_t>(static_cast<float>(rotated[d]));
          }
        }
        for (int64_t h = 0; h < KVH; ++h) {  // (a narrower cache rounds to nearest even here)
          const scalar_t* in = src + (n * (H + 2 * KVH) + H + KVH + h) * D;
          cache_t* out = vp + ((block * KVH + h) * BS + offset) * D;
          for (int64_t d = 0; d < D; ++d) out[d] = static_cast<cache_t>(static_cast<float>(in[d]));
        }
      }
    });
   });
  });
  return qk;
}

// h += x (rounded to h's dtype, as h + x would be), then RMSNorm(h) * weight, accumulated in
// float32 and rounded once (F.rms_norm's arithmetic): the residual add and the next norm in one
// pass. h is updated in place; returns the normed rows.
at::Tensor add_rms_norm(at::Tensor h, const at::Tensor& x_in, const at::Tensor& weight_in, double eps) {
  TORCH_CHECK(h.dim() == 2 && h.is_contiguous(), "h must be a contiguous [rows, dim] tensor");
  const auto x = x_in.contiguous();
  const auto weight = weight_in.to(at::kFloat).contiguous();
  TORCH_CHECK(x.sizes() == h.sizes() && x.scalar_type() == h.scalar_type(), "h and x must match");
  const int64_t N = h.size(0), E = h.size(1);
  auto out = at::empty_like(h);
  RILL_DISPATCH(h.scalar_type(), "rill_add_rms_norm", [&] {
    scalar_t* hp = h.data_ptr<scalar_t>();
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const float* w = weight.data_ptr<float>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 8, [&](int64_t begin, int64_t end) {
      std::vector<float> sum(E), add(E), y(E);
      for (int64_t n = begin; n < end; ++n) {
        scalar_t* row = hp + n * E;
        load_float(row, sum.data(), E);
        load_float(xp + n * E, add.data(), E);
        for (int64_t e = 0; e < E; ++e) sum[e] += add[e];
        store_float(sum.data(), row, E);
        load_float(row, sum.data(), E);  // the residual as stored: what the norm must see
        const float r = 1.f / std::sqrt(sum_of_squares(sum.data(), E) / E + static_cast<float>(eps));
        for (int64_t e = 0; e < E; ++e) y[e] = sum[e] * r * w[e];
        store_float(y.data(), op + n * E, E);
      }
    });
  });
  return out;
}

// gate_up [N, 2F] -> silu(gate) * up [N, F], in float32, rounded once.
at::Tensor silu_mul(const at::Tensor& gate_up_in) {
  const auto gu = gate_up_in.contiguous();
  TORCH_CHECK(gu.dim() == 2 && gu.size(1) % 2 == 0, "gate_up must be [rows, 2 * ffn]");
  const int64_t N = gu.size(0), F = gu.size(1) / 2;
  auto out = at::empty({N, F}, gu.options());
  RILL_DISPATCH(gu.scalar_type(), "rill_silu_mul", [&] {
    const scalar_t* in = gu.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, N, 8, [&](int64_t begin, int64_t end) {
      std::vector<float> gate(F), up(F);
      for (int64_t n = begin; n < end; ++n) {
        load_float(in + n * 2 * F, gate.data(), F);
        load_float(in + n * 2 * F + F, up.data(), F);
        for (int64_t f = 0; f < F; ++f) gate[f] = gate[f] / (1.f + fast_exp(-gate[f])) * up[f];
        store_float(gate.data(), op + n * F, F);
      }
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(rill_kernels, m) {
  m.def("decode_attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor tables, Tensor lengths, float scale) -> Tensor",
        &decode_attention);
  m.def("rope_store(Tensor qkv, Tensor cos, Tensor sin, Tensor positions, Tensor slots, Tensor(a!) k_cache, "
        "Tensor(b!) v_cache, int num_heads, Tensor? q_norm, Tensor? k_norm, float eps) -> Tensor",
        &rope_store);
  m.def("add_rms_norm(Tensor(a!) h, Tensor x, Tensor weight, float eps) -> Tensor", &add_rms_norm);
  m.def("silu_mul(Tensor gate_up) -> Tensor", &silu_mul);
}
