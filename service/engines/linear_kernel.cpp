// Linear layers with compact weights for CPU decoding: y = x @ W^T with float32 activations and
// float32 arithmetic, W stored as float16 (fp16_linear) or as int8 with one scale per output row
// (int8_linear); prompts (more than kGemmRows rows) in bfloat16 pairs when asked and the CPU has
// them (gemm_bf16). Built and loaded by weight_formats.py.
//
// Why not torch's own kernels: fbgemm's int8 linear also quantizes the activations (one 7-bit
// scale per tensor), which moved this product's 135M model's perplexity by +325%;
// aten::_weight_int8pack_mm is 10-30x slower in float32 here; torch's float16 GEMM converts the
// whole matrix first; inductor's generated GEMV converts each weight once per batch row. Here each
// weight is loaded and converted once per step and used for every row of the batch (tiles of MB
// rows x NB blocks of 16 outputs), so decoding reads half (float16) or a quarter (int8) of
// float32's bytes and does float32's arithmetic. Long inputs (prefill) go through the same tiles,
// task by task over the outputs (``gemm``), at this machine's float32 peak without a float32 copy,
// or, opted in, through bfloat16 pairs at twice that (``gemm_bf16``).

#include <algorithm>
#include <atomic>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kGemmRows = 32;  // above this many input rows (prefill), loop over rows inside each task

// Prompts in bfloat16 pairs, set by ``lima::set_prompt_bfloat16`` (``weight_formats.set_prompt_products``).
// The kernel's own switch, not torch's float32 matmul precision: at "medium" torch's CPU flash
// attention computes in bfloat16 too, and a decode step's attention took 5x as long (decoding
// 70 -> 46 tokens/s through the service).
std::atomic<bool> bf16_prompts{false};

void set_prompt_bfloat16(bool on) { bf16_prompts = on; }

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load_w(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_w(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
#elif defined(__AVX2__)
constexpr int64_t kLanes = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load_w(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_w(const at::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
#else
constexpr int64_t kLanes = 1;
using Vec = float;
inline Vec zero() { return 0.f; }
inline Vec load_w(const int8_t* p) { return static_cast<float>(*p); }
inline Vec load_w(const at::Half* p) { return static_cast<float>(*p); }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
#endif

// Weights are stored in blocks of 16 output rows, interleaved: [N/16][K][16] (``weight_formats.pack``
// pads N up to a multiple of 16 with zero rows). A block is one contiguous stream: for each input
// column k, the 16 weights of its 16 outputs side by side, multiplied by x[k] broadcast. Each
// output's sum runs over k in order, the same for every tile shape, so a row's result never
// depends on the other rows of the batch; no horizontal sums are needed. Reading row-major weights
// (the layout before this one) touched 8 rows' cache lines at once and reached 15 GB/s on the
// 49152 x 576 output layer here; blocks of contiguous 18 KB reach 35 GB/s (bench/serve.py).
constexpr int64_t kBlock = 16;
constexpr int kVecs = kBlock / kLanes;  // vectors per block of 16 outputs
constexpr int64_t kAhead = 64;  // input columns ahead to prefetch (2 KB of a float16 block)

inline Vec broadcast(float v) {
#if defined(__AVX512F__)
  return _mm512_set1_ps(v);
#elif defined(__AVX2__)
  return _mm256_set1_ps(v);
#else
  return v;
#endif
}

inline void store(float* p, Vec v) {
#if defined(__AVX512F__)
  _mm512_storeu_ps(p, v);
#elif defined(__AVX2__)
  _mm256_storeu_ps(p, v);
#else
  *p = v;
#endif
}

// One row's 16 finished sums of the block starting at output n0 into y (times the int8 scale),
// the padding outputs past N left out.
inline void write_block(const float* out, const float* scale, float* row, int64_t n0, int64_t N) {
  const int64_t valid = std::min<int64_t>(kBlock, N - n0);
  for (int64_t l = 0; l < valid; ++l) row[l] = scale ? out[l] * scale[n0 + l] : out[l];
}

// Calls f(std::integral_constant<int, MB>) for MB (1 to 8) known at run time only: the tile
// shape for the rows left over.
template <typename F>
inline void with_rows(int64_t MB, F&& f) {
  switch (MB) {
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 1: f(std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

// MB rows of x against NB blocks (NB x 16 outputs) starting at block b0: MB x NB x kVecs
// accumulators stay in registers, each weight is loaded and converted once for the MB rows.
template <int MB, int NB, typename W>
inline void tile(const float* x, int64_t K, const W* w, const float* scale, float* y, int64_t N, int64_t m0,
                 int64_t b0) {
  Vec acc[MB][NB][kVecs];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j)
      for (int v = 0; v < kVecs; ++v) acc[i][j][v] = zero();
  const W* block[NB];
  for (int j = 0; j < NB; ++j) block[j] = w + (b0 + j) * K * kBlock;
  for (int64_t k = 0; k < K; ++k) {
    // Two or more rows do enough arithmetic per weight that the loads stall it unless asked for
    // early (8 rows: 18 -> 15 ms for the embedded model's linears); one row is bound by the
    // memory bus alone and the extra instructions only slow it, so it goes without.
    if constexpr (MB > 1)
      for (int j = 0; j < NB; ++j) __builtin_prefetch(block[j] + (k + kAhead) * kBlock);
    Vec wv[NB][kVecs];
    for (int j = 0; j < NB; ++j)
      for (int v = 0; v < kVecs; ++v) wv[j][v] = load_w(block[j] + k * kBlock + v * kLanes);
    for (int i = 0; i < MB; ++i) {
      const Vec xv = broadcast(x[(m0 + i) * K + k]);
      for (int j = 0; j < NB; ++j)
        for (int v = 0; v < kVecs; ++v) acc[i][j][v] = fma(xv, wv[j][v], acc[i][j][v]);
    }
  }
  alignas(64) float out[kBlock];
  for (int j = 0; j < NB; ++j)
    for (int i = 0; i < MB; ++i) {
      for (int v = 0; v < kVecs; ++v) store(out + v * kLanes, acc[i][j][v]);
      write_block(out, scale, y + (m0 + i) * N + (b0 + j) * kBlock, (b0 + j) * kBlock, N);
    }
}

// MB rows against every block, NB blocks per task; the last task takes what is left one by one.
template <int MB, int NB, typename W>
void rows(const float* x, int64_t m0, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int64_t tasks = (blocks + NB - 1) / NB;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * NB;
      if (b0 + NB <= blocks) {
        tile<MB, NB>(x, K, w, scale, y, N, m0, b0);
      } else {
        for (int64_t b = b0; b < blocks; ++b) tile<MB, 1>(x, K, w, scale, y, N, m0, b);
      }
    }
  });
}

// y = x @ W^T for M rows of x, tile by tile (M is small: decoding).
template <typename W>
void gemv(const float* x, int64_t M, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  // one row: 8 blocks (8 independent sums in flight, 8 contiguous streams); more rows share each
  // loaded weight, so fewer blocks: as many as keep the MB x NB accumulators, the NB weights and
  // the broadcast input within the 32 vector registers (3 to 8 rows: 7-14% faster than the 4 or 2
  // blocks before, the same sums; 2 rows are slower with more than 4)
  for (int64_t m = 0; m < M; m += 8)
    with_rows(std::min<int64_t>(8, M - m), [&](auto mb) {
      constexpr int MB = decltype(mb)::value;
      rows<MB, MB == 1 ? 8 : MB == 2 ? 4 : MB <= 4 ? 6 : MB <= 6 ? 4 : 3>(x, m, K, w, scale, y, N);
    });
}

void check_input(const char* op, const at::Tensor& x, const at::Tensor& weight, at::ScalarType type, int64_t N) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == type && weight.dim() == 3 && weight.size(2) == kBlock, op,
              ": weight must be a ", type, " tensor of blocks [N/16][K][16] (weight_formats.pack)");
  TORCH_CHECK(weight.size(1) == x.size(-1), op, ": weight has ", weight.size(1), " columns, input has ", x.size(-1));
  TORCH_CHECK(N > 0 && N <= weight.size(0) * kBlock && N > (weight.size(0) - 1) * kBlock, op, ": ", N,
              " outputs do not fit ", weight.size(0), " blocks of 16");
}

// Long inputs (prefill): each task takes three blocks (48 outputs) and runs every row through them
// 8 at a time, so its 3 x K x 16 weights are read from memory once and stay in cache while the
// rows stream past. The same tiles as decoding, so each row's sums are the very sums a decode
// step makes for it; no float32 copy of the layer (the path before this converted the layer to
// float32 per request and called torch's float32 GEMM: 548 against 367 ms for the linears of a
// 330-token prompt on the embedded model here). 8 x 3 tiles keep 24 sums in registers: two blocks
// a task took 10-16% longer (369-401 against 332-336 ms for those linears), four blocks of 6 rows
// 4-6% longer, and converting a task's blocks to a float32 copy first (twice the bytes) longer too.
template <typename W>
void gemm(const float* x, int64_t M, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  constexpr int NB = 3;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int64_t tasks = (blocks + NB - 1) / NB;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * NB;
      for (int64_t m = 0; m < M; m += 8)
        with_rows(std::min<int64_t>(8, M - m), [&](auto mb) {
          constexpr int MB = decltype(mb)::value;
          if (b0 + NB <= blocks) {
            tile<MB, NB>(x, K, w, scale, y, N, m, b0);
          } else {
            for (int64_t b = b0; b < blocks; ++b) tile<MB, 1>(x, K, w, scale, y, N, m, b);
          }
        });
    }
  });
}

#if defined(__AVX512BF16__)
// Long inputs in bfloat16 products (``gemm_bf16``): the inputs and the weights are rounded to
// bfloat16 and multiplied in pairs with float32 sums (VDPBF16PS: 32 products an instruction where
// an FMA makes 16), so a prompt's linears take about half as long as float32's at the same peak.
// Only when asked (``lima serve --prompt-products bfloat16``): the rounding moves the embedded
// model's logits about 10x further than float16 weights do, and its top token changes at 35 of
// 8,982 positions of the project's chains where float32 decides by 0.01 or more (float32
// products: 0; llama.cpp F16: 0), though perplexity moves only +0.03%.
// Decoding keeps float32 products (a step is bound by reading the weights, not by arithmetic).
//
// Weights of a task's blocks are converted once per call into pairs of input columns: for
// columns 2p and 2p+1, the 16 outputs' two weights side by side ([K/2][16][2] bfloat16 per block,
// one 64-byte vector per pair), the layout VDPBF16PS multiplies against one broadcast pair of inputs.
template <typename W>
void to_pairs(const W* block, int64_t K, __m512i* out) {
  // interleave the 16 weights of column 2p (low half) with column 2p+1's (high half)
  const __m512i order = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                         6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int64_t p = 0; p < (K + 1) / 2; ++p) {
    const Vec even = load_w(block + 2 * p * kBlock);
    const Vec odd = 2 * p + 1 < K ? load_w(block + (2 * p + 1) * kBlock) : zero();
    out[p] = _mm512_permutexvar_epi16(order, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
  }
}

// MB rows of bfloat16 input pairs (``pairs`` per row) against NB converted blocks.
template <int MB, int NB>
inline void tile_bf16(const uint32_t* x, int64_t pairs, const __m512i* const* block, const float* scale, float* y,
                      int64_t N, int64_t m0, int64_t b0) {
  __m512 acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = (__m512bh)_mm512_load_si512(block[j] + p);
    for (int i = 0; i < MB; ++i) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[(m0 + i) * pairs + p]));
      for (int j = 0; j < NB; ++j) acc[i][j] = _mm512_dpbf16_ps(acc[i][j], xv, wv[j]);
    }
  }
  alignas(64) float out[kBlock];
  for (int j = 0; j < NB; ++j)
    for (int i = 0; i < MB; ++i) {
      _mm512_store_ps(out, acc[i][j]);
      write_block(out, scale, y + (m0 + i) * N + (b0 + j) * kBlock, (b0 + j) * kBlock, N);
    }
}

// As ``gemm`` but two blocks a task (three showed no clear gain here), in bfloat16 products. ``x``: M rows of
// ``pairs`` bfloat16 pairs (the input rounded, an odd K padded with a zero).
template <typename W>
void gemm_bf16(const uint32_t* x, int64_t M, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  constexpr int NB = 2;
  const int64_t pairs = (K + 1) / 2;
  const int64_t blocks = (N + kBlock - 1) / kBlock;
  const int64_t tasks = (blocks + NB - 1) / NB;
  at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
    std::vector<__m512i> converted(NB * pairs);  // (std::vector aligns __m512i to 64 bytes since C++17)
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * NB;
      const int64_t nb = std::min<int64_t>(NB, blocks - b0);
      const __m512i* block[NB];
      for (int64_t j = 0; j < nb; ++j) {
        to_pairs(w + (b0 + j) * K * kBlock, K, converted.data() + j * pairs);
        block[j] = converted.data() + j * pairs;
      }
      for (int64_t m = 0; m < M; m += 8)
        with_rows(std::min<int64_t>(8, M - m), [&](auto mb) {
          constexpr int MB = decltype(mb)::value;
          if (nb == NB) tile_bf16<MB, NB>(x, pairs, block, scale, y, N, m, b0);
          else tile_bf16<MB, 1>(x, pairs, block, scale, y, N, m, b0);
        });
    }
  });
}
#endif

template <typename W>
at::Tensor blocked_linear(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* scale,
                          int64_t N, at::ScalarType type) {
  check_input(op, x, weight, type, N);
  const int64_t K = x.size(-1);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  const auto x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  auto y = at::empty({M, N}, x.options());
  const auto w = weight.contiguous();
  const float* s = scale ? scale->data_ptr<float>() : nullptr;
#if defined(__AVX512BF16__)
  if (M > kGemmRows && bf16_prompts) {
    auto xb = at::zeros({M, (K + 1) / 2 * 2}, x.options().dtype(at::kBFloat16));  // rounded to nearest even
    xb.narrow(1, 0, K).copy_(x2);
    gemm_bf16<W>(reinterpret_cast<const uint32_t*>(xb.data_ptr<at::BFloat16>()), M, K, w.data_ptr<W>(), s,
                 y.data_ptr<float>(), N);
    return y.view(sizes);
  }
#endif
  (M > kGemmRows ? gemm<W> : gemv<W>)(x2.data_ptr<float>(), M, K, w.data_ptr<W>(), s, y.data_ptr<float>(), N);
  return y.view(sizes);
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale, int64_t N) {
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == weight.size(0) * kBlock && scale.is_contiguous(),
              "int8_linear: one float32 scale per (padded) output row");
  return blocked_linear<int8_t>("int8_linear", x, weight, &scale, N, at::kChar);
}

at::Tensor fp16_linear(const at::Tensor& x, const at::Tensor& weight, int64_t N) {
  return blocked_linear<at::Half>("fp16_linear", x, weight, nullptr, N, at::kHalf);
}

}  // namespace

TORCH_LIBRARY(lima, m) {
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale, int n) -> Tensor");
  m.def("fp16_linear(Tensor x, Tensor weight, int n) -> Tensor");
  m.def("set_prompt_bfloat16(bool on) -> ()", set_prompt_bfloat16);
}
TORCH_LIBRARY_IMPL(lima, CPU, m) {
  m.impl("int8_linear", int8_linear);
  m.impl("fp16_linear", fp16_linear);
}
