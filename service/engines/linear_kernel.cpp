// Linear layers with compact weights for CPU decoding: y = x @ W^T with float32 activations and
// float32 arithmetic, W stored as float16 (fp16_linear) or as int8 with one scale per output row
// (int8_linear). Built and loaded by weight_formats.py.
//
// Why not torch's own kernels: fbgemm's int8 linear also quantizes the activations (one 7-bit
// scale per tensor), which moved this product's 135M model's perplexity by +325%;
// aten::_weight_int8pack_mm is 10-30x slower in float32 here; torch's float16 GEMM converts the
// whole matrix first; inductor's generated GEMV converts each weight once per batch row. Here each
// weight is loaded and converted once per step and used for every row of the batch (tiles of MB
// rows x NB weight rows), so decoding reads half (float16) or a quarter (int8) of float32's bytes
// and does float32's arithmetic. Long inputs (prefill) convert the layer once and use the float32
// GEMM.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

constexpr int64_t kGemmRows = 32;  // above this many input rows, de-quantize and use the GEMM

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
using Vec = __m512;
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec load_x(const float* p) { return _mm512_loadu_ps(p); }
inline Vec load_w(const int8_t* p) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_w(const at::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__)
constexpr int64_t kLanes = 8;
using Vec = __m256;
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec load_x(const float* p) { return _mm256_loadu_ps(p); }
inline Vec load_w(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
inline Vec load_w(const at::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline float sum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#else
constexpr int64_t kLanes = 1;
using Vec = float;
inline Vec zero() { return 0.f; }
inline Vec load_x(const float* p) { return *p; }
inline Vec load_w(const int8_t* p) { return static_cast<float>(*p); }
inline Vec load_w(const at::Half* p) { return static_cast<float>(*p); }
inline Vec fma(Vec a, Vec b, Vec c) { return a * b + c; }
inline float sum(Vec v) { return v; }
#endif

// MB rows of x against NB rows of w: MB x NB accumulators stay in registers.
template <int MB, int NB, typename W>
inline void tile(const float* x, int64_t K, const W* w, const float* scale, float* y, int64_t N, int64_t m0,
                 int64_t n0) {
  Vec acc[MB][NB];
  for (int i = 0; i < MB; ++i)
    for (int j = 0; j < NB; ++j) acc[i][j] = zero();
  const int64_t body = K - K % kLanes;
  for (int64_t k = 0; k < body; k += kLanes) {
    Vec wv[NB];
    for (int j = 0; j < NB; ++j) wv[j] = load_w(w + (n0 + j) * K + k);
    for (int i = 0; i < MB; ++i) {
      const Vec xv = load_x(x + (m0 + i) * K + k);
      for (int j = 0; j < NB; ++j) acc[i][j] = fma(xv, wv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MB; ++i) {
    for (int j = 0; j < NB; ++j) {
      float total = sum(acc[i][j]);
      for (int64_t k = body; k < K; ++k) total += x[(m0 + i) * K + k] * static_cast<float>(w[(n0 + j) * K + k]);
      y[(m0 + i) * N + n0 + j] = scale ? total * scale[n0 + j] : total;
    }
  }
}

template <int MB, int NB, typename W>
void rows(const float* x, int64_t m0, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  const int64_t blocks = N / NB;
  at::parallel_for(0, blocks, 8, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) tile<MB, NB>(x, K, w, scale, y, N, m0, b * NB);
  });
  for (int64_t n = blocks * NB; n < N; ++n) tile<MB, 1>(x, K, w, scale, y, N, m0, n);
}

// y = x @ W^T for M rows of x, tile by tile (M is small: decoding).
template <typename W>
void gemv(const float* x, int64_t M, int64_t K, const W* w, const float* scale, float* y, int64_t N) {
  // 8 rows x 2 weight rows per tile (16 accumulators, 19 of the 32 vector registers): one pass
  // over the weights for a batch of 8, measured faster than two passes of 4 x 4 or one of 8 x 3
  int64_t m = 0;
  for (; m + 8 <= M; m += 8) rows<8, 2>(x, m, K, w, scale, y, N);
  switch (M - m) {
    case 7: rows<7, 2>(x, m, K, w, scale, y, N); break;
    case 6: rows<6, 2>(x, m, K, w, scale, y, N); break;
    case 5: rows<5, 2>(x, m, K, w, scale, y, N); break;
    case 4: rows<4, 4>(x, m, K, w, scale, y, N); break;
    case 3: rows<3, 4>(x, m, K, w, scale, y, N); break;
    case 2: rows<2, 4>(x, m, K, w, scale, y, N); break;
    case 1: rows<1, 8>(x, m, K, w, scale, y, N); break;
    default: break;
  }
}

void check_input(const char* op, const at::Tensor& x, const at::Tensor& weight, at::ScalarType type) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, op, ": x must be float32, got ", x.scalar_type());
  TORCH_CHECK(weight.scalar_type() == type && weight.dim() == 2, op, ": weight must be a 2-D ", type, " matrix");
  TORCH_CHECK(weight.size(1) == x.size(-1), op, ": weight has ", weight.size(1), " columns, input has ", x.size(-1));
}

at::Tensor int8_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& scale) {
  check_input("int8_linear", x, weight, at::kChar);
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == weight.size(0),
              "int8_linear: one float32 scale per weight row");
  const int64_t K = x.size(-1), N = weight.size(0);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  const auto x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  if (M > kGemmRows) {
    return at::linear(x2, weight.to(at::kFloat).mul_(scale.reshape({N, 1}))).view(sizes);
  }
  auto y = at::empty({M, N}, x.options());
  const auto w = weight.contiguous();
  const auto s = scale.contiguous();
  gemv(x2.data_ptr<float>(), M, K, w.data_ptr<int8_t>(), s.data_ptr<float>(), y.data_ptr<float>(), N);
  return y.view(sizes);
}

at::Tensor fp16_linear(const at::Tensor& x, const at::Tensor& weight) {
  check_input("fp16_linear", x, weight, at::kHalf);
  const int64_t K = x.size(-1), N = weight.size(0);
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  const auto x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  if (M > kGemmRows) {
    return at::linear(x2, weight.to(at::kFloat)).view(sizes);
  }
  auto y = at::empty({M, N}, x.options());
  const auto w = weight.contiguous();
  gemv<at::Half>(x2.data_ptr<float>(), M, K, w.data_ptr<at::Half>(), nullptr, y.data_ptr<float>(), N);
  return y.view(sizes);
}

}  // namespace

TORCH_LIBRARY(lima, m) {
  m.def("int8_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor");
  m.def("fp16_linear(Tensor x, Tensor weight) -> Tensor");
}
TORCH_LIBRARY_IMPL(lima, CPU, m) {
  m.impl("int8_linear", int8_linear);
  m.impl("fp16_linear", fp16_linear);
}
