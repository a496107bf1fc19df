// Fused CPU kernel of GaussianAdaptiveAttention (layer.py): output x * w and its backward, in few passes over memory.
//
// Plain C++ with OpenMP and no torch headers, so that it builds in a second with the system compiler; layer.py
// builds it on first use, loads it with ctypes, and falls back to its exact PyTorch path when it cannot.
// The math is layer.py's `_GaussianWeights` (same formulas, same order of per-head scalars), fused: per head
// segment the input is read from memory once, later passes run on the segment while it sits in cache.
//
// Geometry: x is contiguous (outer, L, inner), the normalised axis has length L. For each outer index b, head h
// covers ranks [starts[b][h], starts[b][h + 1]) of b's position list (positions[b], or the identity when null);
// ranks from starts[b][H] on are padding and pass through. A null `row_valid` means every outer row is real,
// otherwise rows with 0 pass through.
// Per (b, h, j) statistics saved for the backward, laid out (outer, heads, kStats, inner) so that a tile's columns of
// each are contiguous: mean, var, peak (min of z^2), factor, clamped. The backward returns
// the per-head parameters' gradients summed over each task's columns: per (b, h, tile of kTile columns).

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>
#if defined(__SSE__)
#include <immintrin.h>
#endif

namespace {

enum Normalization { kSum = 0, kMean = 1, kNone = 2 };
constexpr int kStats = 5;
constexpr int kParamGrads = 4;

// Subnormal floats (below 1.2e-38) read and written as 0 while the float kernel runs, on each thread that runs it.
// Weights of elements far out in a narrow Gaussian's tail land there (with the reference's initialisation, 16 heads of
// 20 Gaussians put 3% of the outputs there), and x86 cores slow down on subnormal operands and results: flushing them
// made the kernel 5-10% faster on (8, 512, 768). What is lost are tail weights that pass below 1.2e-38 on the way (the
// float exp_of already ends at exp(-87)); "sum"'s eps floor can scale such a weight by up to 1/eps before it is lost.
// The double kernel, the precise one, keeps subnormals as the exact path does.
template <typename T>
class FlushSubnormals {
 public:
#if defined(__SSE__)
  FlushSubnormals() : saved_(_mm_getcsr()) {
    if (std::is_same_v<T, float>) _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero);
  }
  ~FlushSubnormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  unsigned saved_;
#endif
};

// ---- Vectors: GCC/clang vector extensions, lowered to the vector width the machine has. ----

template <typename T, int Bytes>
struct VectorOf {
  typedef T type __attribute__((vector_size(Bytes)));
};
// The machine's register width (`-march=native`): a wider type would be split and spilled.
#if defined(__AVX512F__)
constexpr int kVectorBytes = 64;
#elif defined(__AVX__)
constexpr int kVectorBytes = 32;
#else
constexpr int kVectorBytes = 16;
#endif
template <typename T>
using Vector = typename VectorOf<T, kVectorBytes>::type;
template <typename T>
constexpr int64_t kLanes = kVectorBytes / sizeof(T);
// Columns per task on the strided layout: four float registers (64 columns with AVX-512, 32 with AVX2). Measured on
// (8, 512, 768): wider tiles spill the per-column sums out of the registers (AVX2 tiles of 64 columns made the backward
// 40% slower), narrower ones read memory in shorter runs (AVX-512 tiles of 32 columns cost 15%).
constexpr int64_t kTile = 4 * kVectorBytes / sizeof(float);

template <typename T>
inline Vector<T> load(const T* p) {
  Vector<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
inline void store(T* p, Vector<T> v) {
  std::memcpy(p, &v, sizeof v);
}

// a * b + c, rounded once where the machine has fused multiply-adds (the kernel is built without contraction, see
// layer.py: these are the only ones, in exp_of's polynomial, where they made the kernel 8% faster).
inline float multiply_add(float a, float b, float c) {
#if defined(__FMA__)
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

inline Vector<float> multiply_add(Vector<float> a, Vector<float> b, Vector<float> c) {
#if defined(__AVX512F__)
  return reinterpret_cast<Vector<float>>(_mm512_fmadd_ps(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b),
                                                         reinterpret_cast<__m512>(c)));
#elif defined(__FMA__) && defined(__AVX__)
  return reinterpret_cast<Vector<float>>(_mm256_fmadd_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b),
                                                         reinterpret_cast<__m256>(c)));
#else
  return a * b + c;
#endif
}

// 2^n for whole numbers n (as floats) in the normal range, built in the exponent bits.
inline float power_of_two(float n) {
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float result;
  std::memcpy(&result, &bits, sizeof result);
  return result;
}

inline Vector<float> power_of_two(Vector<float> n) {
  using Int = VectorOf<int32_t, kVectorBytes>::type;
  const Int bits = (__builtin_convertvector(n, Int) + 127) << 23;
  Vector<float> result;
  std::memcpy(&result, &bits, sizeof result);
  return result;
}

// exp for float, one float or a vector of them, branch-free (Cephes' expf: range reduction to [-ln2/2, ln2/2] and a
// degree-6 polynomial; within 1.01 ulp of exp at every float in [-87, 0]). Arguments here are <= 0; below the float
// range it returns 0 like expf. Adding and removing 1.5 * 2^23 rounds to the nearest integer, ties to even, as
// nearbyint does, for |v| < 2^22.
template <typename F>
inline F float_exp(F x) {
  const F zero = F{}, floor = zero - 87.0f;
  const F clamped = x < floor ? floor : x;
  const F n = (clamped * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const F r = multiply_add(n, zero + 2.12194440e-4f, multiply_add(n, zero - 0.693359375f, clamped));
  F p = zero + 1.9875691500e-4f;
  p = multiply_add(p, r, zero + 1.3981999507e-3f);
  p = multiply_add(p, r, zero + 8.3334519073e-3f);
  p = multiply_add(p, r, zero + 4.1665795894e-2f);
  p = multiply_add(p, r, zero + 1.6666665459e-1f);
  p = multiply_add(p, r, zero + 5.0000001201e-1f);
  p = multiply_add(p, r * r, r) + 1.0f;
  return x < floor ? zero : p * power_of_two(n);
}

inline float exp_of(float x) { return float_exp(x); }
inline Vector<float> exp_of(Vector<float> x) { return float_exp(x); }
inline double exp_of(double x) { return std::exp(x); }
inline Vector<double> exp_of(Vector<double> x) {
  for (int64_t l = 0; l < kLanes<double>; ++l) x[l] = std::exp(x[l]);
  return x;
}

template <typename T>
struct Head {
  T precision, shift, spread, log_norm;
};

// Per segment (one column j of one head): the scalars of the forward. `clamped` is 1 where the reference's eps
// floor is active ("sum" only), else 0.
template <typename T>
struct SegmentStats {
  T mean, var, scale, peak, factor, clamped;
};

// The normaliser of exp(peak - z^2) once its sum `total` is known: layer.py's `factor`. Plain values in and out, so
// that a loop over columns calling it vectorises.
template <typename T>
inline T factor_of(T total, T var, T peak, const Head<T>& head, int64_t n, T eps, int mode, T& clamped) {
  clamped = T(0);
  if (mode == kNone) return T(1);
  const T normal = T(1) / total;
  if (mode == kMean) return normal * T(n);
  const T k = head.log_norm - T(0.5) * head.spread / var;
  const T floored = exp_of(static_cast<T>(k - peak)) / eps;
  clamped = floored < normal ? T(1) : T(0);
  return floored < normal ? floored : normal;
}

template <typename T>
inline T scale_of(T var, const Head<T>& head) {
  return std::sqrt(T(0.5) * head.precision / var);
}

// Backward scalars of one segment, from beta = sum(dL/dw * w), S0 = sum(grad_z) and S1 = sum(grad_z * z): with
// grad_centered = grad_z * a + centered * b, the coefficients a, b and the four per-head parameter gradients.
template <typename T>
struct BackwardScalars {
  T a, b;
  T grads[kParamGrads];
};

// The beta of the softmax backward: where the normaliser depends on z (1 / sum e, or n / sum e).
template <typename T>
inline T softmax_beta(T beta, T clamped, int64_t n, int mode) {
  if (mode == kSum) return clamped != T(0) ? T(0) : beta;
  if (mode == kMean) return beta / T(n);
  return T(0);
}

template <typename T>
inline BackwardScalars<T> backward_scalars(T scale, T var, T clamped, const Head<T>& head, T beta, T s0, T s1,
                                           int64_t bessel, int mode) {
  const T grad_k = (mode == kSum && clamped != T(0)) ? beta : T(0);
  const T grad_scale = s1 / scale;
  const T grad_shift = -scale * s0;
  const T grad_var = (head.spread * grad_k / var - scale * grad_scale) / (T(2) * var);
  BackwardScalars<T> r;
  r.a = scale;
  r.b = T(2) * grad_var / T(bessel);
  r.grads[0] = grad_scale * scale / (T(2) * head.precision);
  r.grads[1] = grad_shift;
  r.grads[2] = -grad_k / (T(2) * var);
  r.grads[3] = grad_k;
  return r;
}

template <typename T>
inline void load_stats(const T* stats, SegmentStats<T>& s, const Head<T>& head) {
  s.mean = stats[0];
  s.var = stats[1];
  s.peak = stats[2];
  s.factor = stats[3];
  s.clamped = stats[4];
  s.scale = scale_of(s.var, head);
}

template <typename T>
inline void store_stats(T* stats, const SegmentStats<T>& s) {
  stats[0] = s.mean;
  stats[1] = s.var;
  stats[2] = s.peak;
  stats[3] = s.factor;
  stats[4] = s.clamped;
}

struct Geometry {
  int64_t outer, length, inner, heads;
  const int64_t* positions;
  int64_t positions_stride;
  const int64_t* starts;
  int64_t starts_stride;
  const uint8_t* row_valid;
  int threads;

  const int64_t* starts_of(int64_t b) const { return starts + b * starts_stride; }
  bool real_row(int64_t b) const { return row_valid == nullptr || row_valid[b] != 0; }
};

template <typename T>
Head<T> head_of(const T* params, int64_t h, int64_t heads) {
  return {params[h], params[heads + h], params[2 * heads + h], params[3 * heads + h]};
}


// ---- Reductions over a contiguous segment, in whole vector registers. ----
// A head is often a few dozen elements, a few vectors: an `omp simd reduction` loop then costs more in its horizontal
// sum at the end (GCC adds the lanes one after another, through the stack) than in the segment itself. These keep one
// accumulator register (GCC/clang vector extensions, lowered to the vector width the machine has) and add its halves
// in a tree.

template <typename T>
inline T combine(T a, T b, bool take_min) {
  return take_min ? std::min(a, b) : a + b;
}

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define GAAM_TREE_REDUCTION 1
#endif
#endif

#ifdef GAAM_TREE_REDUCTION
template <typename V, size_t... I>
inline auto low_half(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, I...);
}

template <typename V, size_t... I>
inline auto high_half(V v, std::index_sequence<I...>) {
  return __builtin_shufflevector(v, v, (I + sizeof...(I))...);
}

template <typename T, int Bytes>
inline T lane_reduce(typename VectorOf<T, Bytes>::type v, bool take_min) {
  constexpr size_t lanes = Bytes / sizeof(T);
  if constexpr (lanes == 2) {
    return combine(v[0], v[1], take_min);
  } else {
    const auto low = low_half(v, std::make_index_sequence<lanes / 2>());
    const auto high = high_half(v, std::make_index_sequence<lanes / 2>());
    return lane_reduce<T, Bytes / 2>(take_min ? (low < high ? low : high) : low + high, take_min);
  }
}
#else  // compilers without __builtin_shufflevector (GCC < 12): lane by lane
template <typename T, int Bytes>
inline T lane_reduce(typename VectorOf<T, Bytes>::type v, bool take_min) {
  T result = v[0];
  for (int64_t l = 1; l < kLanes<T>; ++l) result = combine(result, T(v[l]), take_min);
  return result;
}
#endif

template <typename T>
inline T lane_sum(Vector<T> v) {
  return lane_reduce<T, kVectorBytes>(v, false);
}

template <typename T>
inline T lane_min(Vector<T> v) {
  return lane_reduce<T, kVectorBytes>(v, true);
}

// sum(a[k] * b[k]) over k in [0, n); sum(a[k]) where b is null.
template <typename T>
inline T segment_dot(const T* a, const T* b, int64_t n) {
  Vector<T> acc = {};
  int64_t k = 0;
  if (b == nullptr) {
    for (; k + kLanes<T> <= n; k += kLanes<T>) acc += load(a + k);
  } else {
    for (; k + kLanes<T> <= n; k += kLanes<T>) acc += load(a + k) * load(b + k);
  }
  T total = lane_sum<T>(acc);
  for (; k < n; ++k) total += b == nullptr ? a[k] : a[k] * b[k];
  return total;
}

template <typename T>
inline T segment_sum(const T* a, int64_t n) {
  return segment_dot<T>(a, nullptr, n);
}

// sum((a[k] - center)^2)
template <typename T>
inline T segment_squares(const T* a, T center, int64_t n) {
  Vector<T> acc = {};
  int64_t k = 0;
  for (; k + kLanes<T> <= n; k += kLanes<T>) {
    const Vector<T> deviation = load(a + k) - center;
    acc += deviation * deviation;
  }
  T total = lane_sum<T>(acc);
  for (; k < n; ++k) total += (a[k] - center) * (a[k] - center);
  return total;
}

// min(a[k]^2)
template <typename T>
inline T segment_min_square(const T* a, int64_t n) {
  Vector<T> acc = {};
  acc += T(INFINITY);
  int64_t k = 0;
  for (; k + kLanes<T> <= n; k += kLanes<T>) {
    const Vector<T> v = load(a + k);
    const Vector<T> square = v * v;
    acc = square < acc ? square : acc;
  }
  T result = lane_min<T>(acc);
  for (; k < n; ++k) result = std::min(result, a[k] * a[k]);
  return result;
}

// ---- Sweeps over a contiguous segment: whole vectors, then the remaining elements one by one. ----

template <typename U, typename T>
inline U load_as(const T* p) {
  if constexpr (std::is_same_v<U, T>)
    return *p;
  else
    return load(p);
}

template <typename T>
inline void store(T* p, T v) {
  *p = v;
}

// Runs `body(k, sums)` for k = 0, L, 2L, ... over [0, n) while whole vectors of L lanes fit, with `sums` N vectors,
// then for each remaining k with `sums` N scalars (loads and stores in `body` use load_as<the sums' element type>);
// returns the N sums. An elementwise pass and the sums over its results run in one loop, the results summed from
// registers rather than read back from memory.
template <typename T, size_t N, typename Body>
inline std::array<T, N> sweep(int64_t n, Body body) {
  std::array<Vector<T>, N> wide{};
  int64_t k = 0;
  for (; k + kLanes<T> <= n; k += kLanes<T>) body(k, wide);
  std::array<T, N> narrow;
  for (size_t i = 0; i < N; ++i) narrow[i] = lane_sum<T>(wide[i]);
  for (; k < n; ++k) body(k, narrow);
  return narrow;
}

template <typename T, typename Body>
inline T sum_sweep(int64_t n, Body body) {
  return sweep<T, 1>(n, [&](int64_t k, auto& sums) { sums[0] += body(k, sums[0]); })[0];
}

// ---- Contiguous segments (inner == 1, identity positions): vectorised along the segment. ----
// One task is one row, all its heads: each pass runs over every head before the next pass starts, so the heads'
// short dependency chains (sum -> variance -> peak -> normaliser) overlap instead of running one after another.
// A sum over values a pass writes must not read them back right behind the pass's stores: they cannot be forwarded
// from the stores and each read stalls (13% of the kernel with 16 heads of 48 features). The backward sums them in
// the same loop, from registers (`sweep`: 10% less time than separate passes); the forward's sums run after the pass
// is done for every head (fused like the backward's, the forward measured 10% slower at (8, 512, 768)).

template <typename T>
void rows_forward(const Geometry& g, const T* x, T* out, T* stats, const T* params, T eps, int mode) {
  const int64_t H = g.heads;
#pragma omp parallel num_threads(g.threads)
  {
    const FlushSubnormals<T> flush;  // per thread: each has its own floating-point control register
    std::vector<T> zs(g.length);
    std::vector<SegmentStats<T>> s(H);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < g.outer; ++b) {
      const int64_t* starts = g.starts_of(b);
      const T* xr = x + b * g.length;
      T* orow = out + b * g.length;
      if (!g.real_row(b)) {
        std::copy(xr, xr + g.length, orow);
        continue;
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = starts[h + 1] - starts[h];
        s[h].mean = segment_sum(xr + starts[h], n) / T(n);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = starts[h + 1] - starts[h];
        s[h].var = segment_squares(xr + starts[h], s[h].mean, n) / T(std::max<int64_t>(n - 1, 1)) + eps;
        s[h].scale = scale_of(s[h].var, head_of(params, h, H));
      }
      for (int64_t h = 0; h < H; ++h) {
        const T* xs = xr + starts[h];
        const int64_t n = starts[h + 1] - starts[h];
        T* z = zs.data() + starts[h];
        const T mean = s[h].mean, scale = s[h].scale, offset = -params[H + h] * scale;
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) z[k] = offset + (xs[k] - mean) * scale;
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = starts[h + 1] - starts[h];
        s[h].peak = mode == kNone ? T(0) : segment_min_square(zs.data() + starts[h], n);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = starts[h + 1] - starts[h];
        T* z = zs.data() + starts[h];
        const T peak = s[h].peak;
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) z[k] = exp_of(static_cast<T>(peak - z[k] * z[k]));  // now exp(peak - z^2)
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t n = starts[h + 1] - starts[h];
        const T total = segment_sum(zs.data() + starts[h], n);
        s[h].factor = factor_of(total, s[h].var, s[h].peak, head_of(params, h, H), n, eps, mode, s[h].clamped);
        store_stats(stats + (b * H + h) * kStats, s[h]);
      }
      for (int64_t h = 0; h < H; ++h) {
        const T* xs = xr + starts[h];
        T* os = orow + starts[h];
        const T* z = zs.data() + starts[h];
        const int64_t n = starts[h + 1] - starts[h];
        const T factor = s[h].factor;
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) os[k] = xs[k] * (z[k] * factor);
      }
    }
  }
}

template <typename T>
void rows_backward(const Geometry& g, const T* x, const T* grad_out, T* grad_x, const T* stats, const T* params,
                   T* param_grads, int mode) {
  const int64_t H = g.heads;
#pragma omp parallel num_threads(g.threads)
  {
    const FlushSubnormals<T> flush;  // per thread: each has its own floating-point control register
    std::vector<T> buffer(2 * g.length);
    std::vector<SegmentStats<T>> s(H);
    std::vector<T> beta(H), a(H), bcoef(H), mean_centered(H);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < g.outer; ++b) {
      const int64_t* starts = g.starts_of(b);
      const T* xr = x + b * g.length;
      const T* gor = grad_out + b * g.length;
      T* gxr = grad_x + b * g.length;
      T* pg = param_grads + b * H * kParamGrads;
      std::fill(pg, pg + H * kParamGrads, T(0));
      if (!g.real_row(b)) {
        std::copy(gor, gor + g.length, gxr);
        continue;
      }
      // z is recomputed from x where a pass needs it, rather than kept in a third buffer.
      T* wr = buffer.data();
      T* gwr = wr + g.length;
      for (int64_t h = 0; h < H; ++h) {  // w, dL/dw * x, and beta = sum(dL/dw * w)
        load_stats(stats + (b * H + h) * kStats, s[h], head_of(params, h, H));
        const int64_t start = starts[h], n = starts[h + 1] - start;
        const T *xs = xr + start, *gos = gor + start;
        T *w = wr + start, *gw = gwr + start;
        const T mean = s[h].mean, scale = s[h].scale, offset = -params[H + h] * scale, peak = s[h].peak,
                factor = s[h].factor;
        beta[h] = sum_sweep<T>(n, [&](int64_t k, auto like) {
          using U = decltype(like);
          const U xk = load_as<U>(xs + k);
          const U zk = offset + (xk - mean) * scale;
          const U wk = exp_of(U{} + peak - zk * zk) * factor;
          const U gwk = load_as<U>(gos + k) * xk;
          store(w + k, wk);
          store(gw + k, gwk);
          return gwk * wk;
        });
      }
      for (int64_t h = 0; h < H; ++h) {  // grad_z into gw's slot, with S0 = sum(grad_z) and S1 = sum(grad_z * z)
        const int64_t start = starts[h], n = starts[h + 1] - start;
        const T* xs = xr + start;
        const T* w = wr + start;
        T* gw = gwr + start;
        const T mean = s[h].mean, scale = s[h].scale, offset = -params[H + h] * scale;
        const T beta_q = softmax_beta(beta[h], s[h].clamped, n, mode);
        const std::array<T, 2> sums = sweep<T, 2>(n, [&](int64_t k, auto& sums) {
          using U = std::decay_t<decltype(sums[0])>;
          const U zk = offset + (load_as<U>(xs + k) - mean) * scale;
          const U grad_z = T(2) * ((beta_q - load_as<U>(gw + k)) * load_as<U>(w + k)) * zk;
          store(gw + k, grad_z);
          sums[0] += grad_z;
          sums[1] += grad_z * zk;
        });
        const BackwardScalars<T> r = backward_scalars(s[h].scale, s[h].var, s[h].clamped, head_of(params, h, H),
                                                      beta[h], sums[0], sums[1], std::max<int64_t>(n - 1, 1), mode);
        a[h] = r.a;
        bcoef[h] = r.b;
        std::copy(r.grads, r.grads + kParamGrads, pg + h * kParamGrads);
      }
      // grad_x = grad_centered - mean(grad_centered): summed as computed, since the centred values only sum to 0
      // up to rounding, which a narrow head's large b would amplify.
      for (int64_t h = 0; h < H; ++h) {
        const int64_t start = starts[h], n = starts[h + 1] - start;
        const T* xs = xr + start;
        T* gw = gwr + start;
        const T mean = s[h].mean, ah = a[h], bh = bcoef[h];
        mean_centered[h] = sum_sweep<T>(n, [&](int64_t k, auto like) {
          using U = decltype(like);
          const U centered = load_as<U>(gw + k) * ah + (load_as<U>(xs + k) - mean) * bh;
          store(gw + k, centered);  // gw's slot: grad_centered
          return centered;
        }) / T(n);
      }
      for (int64_t h = 0; h < H; ++h) {
        const int64_t start = starts[h], n = starts[h + 1] - start;
        const T *gw = gwr + start, *w = wr + start, *gos = gor + start;
        T* gxs = gxr + start;
        const T shift = mean_centered[h];
#pragma omp simd
        for (int64_t k = 0; k < n; ++k) gxs[k] = gw[k] - shift + gos[k] * w[k];
      }
    }
  }
}

// ---- Strided segments (inner > 1 or a position list): vectorised across a tile of columns. ----
// A task is one head of one outer row over a tile of kTile columns: each of the head's rows holds kTile contiguous
// values of the tile, a few whole vector registers. The per-column sums (mean, variance, softmax total, the backward's
// dot products) stay in registers across the head's rows: kept in arrays, each row's update waited on the previous
// row's store (store-to-load forwarding), and loops over a runtime width paid their remainder handling on every row.
// Per-column scalars between passes (variance, normaliser, backward coefficients) go through arrays, once per task.
// A tile narrower than kTile (the last columns of a row) runs on zero-padded copies of its rows, so that every tile
// runs the same code; padded columns are never written back nor summed into the parameter gradients.

template <typename T>
constexpr int64_t kTileVectors = kTile / kLanes<T>;

// A tile's per-column values in vector registers.
template <typename T>
struct TileVectors {
  Vector<T> v[kTileVectors<T>] = {};

  static TileVectors of(const T* columns) {
    TileVectors t;
    for (int64_t i = 0; i < kTileVectors<T>; ++i) t.v[i] = load(columns + i * kLanes<T>);
    return t;
  }
  void store_to(T* columns) const {
    for (int64_t i = 0; i < kTileVectors<T>; ++i) store(columns + i * kLanes<T>, v[i]);
  }
};

// Where a task's rows are: per tensor, a pointer to each row's tile (row k at `base + offset(k)`), or for a tile
// narrower than kTile, to a zero-padded copy of it (an input's copy is filled from the tensor; `write_back` returns
// an output's real columns).
template <typename T>
class TileRows {
 public:
  TileRows(int64_t length, int tensors) : length_(length), tensors_(tensors), rows_(length * tensors) {}

  template <typename Offset>
  const T* const* input(int tensor, const T* base, int64_t n, int64_t width, Offset offset) {
    return point(tensor, const_cast<T*>(base), n, width, offset, true);  // never written through
  }

  template <typename Offset>
  T* const* output(int tensor, T* base, int64_t n, int64_t width, Offset offset) {
    return point(tensor, base, n, width, offset, false);
  }

  template <typename Offset>
  void write_back(int tensor, T* base, int64_t n, int64_t width, Offset offset) const {
    if (width == kTile) return;
    const T* const* rows = rows_.data() + tensor * length_;
    for (int64_t k = 0; k < n; ++k) std::copy(rows[k], rows[k] + width, base + offset(k));
  }

 private:
  template <typename Offset>
  T* const* point(int tensor, T* base, int64_t n, int64_t width, Offset offset, bool fill) {
    T** rows = rows_.data() + tensor * length_;
    if (width == kTile) {
      for (int64_t k = 0; k < n; ++k) rows[k] = base + offset(k);
      return rows;
    }
    if (padded_.empty()) padded_.resize(tensors_ * length_ * kTile);
    for (int64_t k = 0; k < n; ++k) {
      rows[k] = padded_.data() + (tensor * length_ + k) * kTile;
      if (fill) std::copy(base + offset(k), base + offset(k) + width, rows[k]);
      std::fill(rows[k] + (fill ? width : 0), rows[k] + kTile, T(0));
    }
    return rows;
  }

  int64_t length_;
  int tensors_;
  std::vector<T*> rows_;
  std::vector<T> padded_;
};

template <typename T>
void columns_forward(const Geometry& g, const T* x, T* out, T* stats, const T* params, T eps, int mode) {
  constexpr int64_t V = kTileVectors<T>, kL = kLanes<T>;
  using Tile = TileVectors<T>;
  const int64_t tiles = (g.inner + kTile - 1) / kTile;
  const int64_t tasks = g.outer * g.heads * tiles;
#pragma omp parallel num_threads(g.threads)
  {
    const FlushSubnormals<T> flush;  // per thread: each has its own floating-point control register
    TileRows<T> tile_rows(g.length, 2);
    std::vector<T> zs(g.length * kTile);
    T mean[kTile], var[kTile], scale[kTile], peak[kTile], total[kTile], factor[kTile], clamped[kTile];
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (g.heads * tiles), h = task / tiles % g.heads, tile = task % tiles;
      const int64_t j0 = tile * kTile, width = std::min(kTile, g.inner - j0);
      const int64_t* starts = g.starts_of(b);
      const int64_t* positions = g.positions ? g.positions + b * g.positions_stride : nullptr;
      const T* xb = x + b * g.length * g.inner + j0;
      T* ob = out + b * g.length * g.inner + j0;
      auto row = [&](int64_t rank) { return (positions ? positions[rank] : rank) * g.inner; };
      // Padding ranks (all ranks of a padded row) pass through, copied by the last head's tasks.
      if (h == g.heads - 1) {
        for (int64_t rank = g.real_row(b) ? starts[g.heads] : 0; rank < g.length; ++rank)
          std::copy(xb + row(rank), xb + row(rank) + width, ob + row(rank));
      }
      if (!g.real_row(b)) continue;
      const int64_t start = starts[h], n = starts[h + 1] - start;
      if (n == 0) continue;
      const Head<T> head = head_of(params, h, g.heads);
      auto offset = [&](int64_t k) { return row(start + k); };
      const T* const* xr = tile_rows.input(0, xb, n, width, offset);
      T* const* orow = tile_rows.output(1, ob, n, width, offset);

      Tile sums;
      for (int64_t k = 0; k < n; ++k)
        for (int64_t i = 0; i < V; ++i) sums.v[i] += load(xr[k] + i * kL);
      Tile means;
      for (int64_t i = 0; i < V; ++i) means.v[i] = sums.v[i] / T(n);
      Tile squares;
      for (int64_t k = 0; k < n; ++k) {
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> centered = load(xr[k] + i * kL) - means.v[i];
          squares.v[i] += centered * centered;
        }
      }
      means.store_to(mean);
      squares.store_to(total);
      const T bessel = T(std::max<int64_t>(n - 1, 1));
#pragma omp simd
      for (int64_t j = 0; j < kTile; ++j) {
        var[j] = total[j] / bessel + eps;
        scale[j] = scale_of(var[j], head);
        peak[j] = mode == kNone ? T(0) : INFINITY;
      }
      const Tile scales = Tile::of(scale);
      Tile peaks = Tile::of(peak);
      const T shift = head.shift;
      for (int64_t k = 0; k < n; ++k) {
        T* z = zs.data() + k * kTile;
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> zk = -shift * scales.v[i] + (load(xr[k] + i * kL) - means.v[i]) * scales.v[i];
          store(z + i * kL, zk);
          if (mode != kNone) peaks.v[i] = zk * zk < peaks.v[i] ? zk * zk : peaks.v[i];
        }
      }
      Tile totals;
      for (int64_t k = 0; k < n; ++k) {
        T* z = zs.data() + k * kTile;
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> zk = load(z + i * kL);
          const Vector<T> e = exp_of(peaks.v[i] - zk * zk);
          store(z + i * kL, e);  // now exp(peak - z^2)
          totals.v[i] += e;
        }
      }
      peaks.store_to(peak);
      totals.store_to(total);
#pragma omp simd
      for (int64_t j = 0; j < kTile; ++j)
        factor[j] = factor_of(total[j], var[j], peak[j], head, n, eps, mode, clamped[j]);
      T* st = stats + (b * g.heads + h) * kStats * g.inner + j0;
      const T* const saved[kStats] = {mean, var, peak, factor, clamped};  // store_stats' order
      for (int i = 0; i < kStats; ++i) std::copy(saved[i], saved[i] + width, st + i * g.inner);
      const Tile factors = Tile::of(factor);
      for (int64_t k = 0; k < n; ++k) {
        const T* z = zs.data() + k * kTile;
        for (int64_t i = 0; i < V; ++i)
          store(orow[k] + i * kL, load(xr[k] + i * kL) * (load(z + i * kL) * factors.v[i]));
      }
      tile_rows.write_back(1, ob, n, width, offset);
    }
  }
}

template <typename T>
void columns_backward(const Geometry& g, const T* x, const T* grad_out, T* grad_x, const T* stats, const T* params,
                      T* param_grads, int mode) {
  constexpr int64_t V = kTileVectors<T>, kL = kLanes<T>;
  using Tile = TileVectors<T>;
  const int64_t tiles = (g.inner + kTile - 1) / kTile;
  const int64_t tasks = g.outer * g.heads * tiles;
#pragma omp parallel num_threads(g.threads)
  {
    const FlushSubnormals<T> flush;  // per thread: each has its own floating-point control register
    TileRows<T> tile_rows(g.length, 3);
    std::vector<T> buffer(2 * g.length * kTile);
    T mean[kTile], var[kTile], scale[kTile], peak[kTile], factor[kTile], clamped[kTile], beta[kTile], beta_q[kTile],
        s0[kTile], s1[kTile], a[kTile], bcoef[kTile];
#pragma omp for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t b = task / (g.heads * tiles), h = task / tiles % g.heads, tile = task % tiles;
      const int64_t j0 = tile * kTile, width = std::min(kTile, g.inner - j0);
      const int64_t* starts = g.starts_of(b);
      const int64_t* positions = g.positions ? g.positions + b * g.positions_stride : nullptr;
      const T* xb = x + b * g.length * g.inner + j0;
      const T* gob = grad_out + b * g.length * g.inner + j0;
      T* gxb = grad_x + b * g.length * g.inner + j0;
      T* pg = param_grads + ((b * g.heads + h) * tiles + tile) * kParamGrads;
      std::fill(pg, pg + kParamGrads, T(0));
      auto row = [&](int64_t rank) { return (positions ? positions[rank] : rank) * g.inner; };
      if (h == g.heads - 1) {
        for (int64_t rank = g.real_row(b) ? starts[g.heads] : 0; rank < g.length; ++rank)
          std::copy(gob + row(rank), gob + row(rank) + width, gxb + row(rank));
      }
      if (!g.real_row(b)) continue;
      const int64_t start = starts[h], n = starts[h + 1] - start;
      if (n == 0) continue;
      const Head<T> head = head_of(params, h, g.heads);
      auto offset = [&](int64_t k) { return row(start + k); };
      const T* const* xr = tile_rows.input(0, xb, n, width, offset);
      const T* const* gor = tile_rows.input(1, gob, n, width, offset);
      T* const* gxr = tile_rows.output(2, gxb, n, width, offset);
      const T* st = stats + (b * g.heads + h) * kStats * g.inner + j0;
      // Padded columns get harmless statistics: their weights are 0.
      T* const saved[kStats] = {mean, var, peak, factor, clamped};
      const T padding[kStats] = {T(0), T(1), T(0), T(0), T(0)};
      for (int i = 0; i < kStats; ++i) {
        std::copy(st + i * g.inner, st + i * g.inner + width, saved[i]);
        std::fill(saved[i] + width, saved[i] + kTile, padding[i]);
      }
#pragma omp simd
      for (int64_t j = 0; j < kTile; ++j) scale[j] = scale_of(var[j], head);
      const Tile means = Tile::of(mean), scales = Tile::of(scale), peaks = Tile::of(peak), factors = Tile::of(factor);
      const T shift = head.shift;
      // z is recomputed from x where a pass needs it: one buffer less keeps a task's working set (x, grad_out, w and
      // grad_w tiles) in L1.
      auto z_of = [&](const Vector<T>& xk, int64_t i) {
        return -shift * scales.v[i] + (xk - means.v[i]) * scales.v[i];
      };
      T* ws = buffer.data();
      T* gws = ws + g.length * kTile;
      Tile betas;
      for (int64_t k = 0; k < n; ++k) {
        T* w = ws + k * kTile;
        T* gw = gws + k * kTile;
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> xk = load(xr[k] + i * kL), zk = z_of(xk, i);
          const Vector<T> wk = exp_of(peaks.v[i] - zk * zk) * factors.v[i];
          const Vector<T> gwk = load(gor[k] + i * kL) * xk;
          store(w + i * kL, wk);
          store(gw + i * kL, gwk);
          betas.v[i] += gwk * wk;
        }
      }
      betas.store_to(beta);
#pragma omp simd
      for (int64_t j = 0; j < kTile; ++j) beta_q[j] = softmax_beta(beta[j], clamped[j], n, mode);
      const Tile beta_qs = Tile::of(beta_q);
      Tile s0s, s1s;
      for (int64_t k = 0; k < n; ++k) {
        const T* w = ws + k * kTile;
        T* gw = gws + k * kTile;
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> zk = z_of(load(xr[k] + i * kL), i);
          const Vector<T> grad_z = T(2) * ((beta_qs.v[i] - load(gw + i * kL)) * load(w + i * kL)) * zk;
          store(gw + i * kL, grad_z);  // gw's slot: grad_z
          s0s.v[i] += grad_z;
          s1s.v[i] += grad_z * zk;
        }
      }
      s0s.store_to(s0);
      s1s.store_to(s1);
      const int64_t bessel = std::max<int64_t>(n - 1, 1);
      T grad0 = 0, grad1 = 0, grad2 = 0, grad3 = 0;
#pragma omp simd reduction(+ : grad0, grad1, grad2, grad3)
      for (int64_t j = 0; j < kTile; ++j) {
        const BackwardScalars<T> r =
            backward_scalars(scale[j], var[j], clamped[j], head, beta[j], s0[j], s1[j], bessel, mode);
        a[j] = r.a;
        bcoef[j] = r.b;
        const bool real = j < width;
        grad0 += real ? r.grads[0] : T(0);
        grad1 += real ? r.grads[1] : T(0);
        grad2 += real ? r.grads[2] : T(0);
        grad3 += real ? r.grads[3] : T(0);
      }
      pg[0] = grad0;
      pg[1] = grad1;
      pg[2] = grad2;
      pg[3] = grad3;
      const Tile as = Tile::of(a), bs = Tile::of(bcoef);
      Tile mean_centered;
      for (int64_t k = 0; k < n; ++k) {  // grad_centered, summed as computed (see rows_backward)
        T* gc = gws + k * kTile;
        for (int64_t i = 0; i < V; ++i) {
          const Vector<T> gck = load(gc + i * kL) * as.v[i] + (load(xr[k] + i * kL) - means.v[i]) * bs.v[i];
          store(gc + i * kL, gck);
          mean_centered.v[i] += gck;
        }
      }
      for (int64_t i = 0; i < V; ++i) mean_centered.v[i] /= T(n);
      for (int64_t k = 0; k < n; ++k) {
        const T* w = ws + k * kTile;
        const T* gc = gws + k * kTile;
        for (int64_t i = 0; i < V; ++i)
          store(gxr[k] + i * kL,
                load(gc + i * kL) - mean_centered.v[i] + load(gor[k] + i * kL) * load(w + i * kL));
      }
      tile_rows.write_back(2, gxb, n, width, offset);
    }
  }
}

template <typename T>
void forward(const Geometry& g, const T* x, T* out, T* stats, const T* params, T eps, int mode) {
  if (g.inner == 1 && g.positions == nullptr)
    rows_forward(g, x, out, stats, params, eps, mode);
  else
    columns_forward(g, x, out, stats, params, eps, mode);
}

template <typename T>
void backward(const Geometry& g, const T* x, const T* grad_out, T* grad_x, const T* stats, const T* params,
              T* param_grads, int mode) {
  if (g.inner == 1 && g.positions == nullptr)
    rows_backward(g, x, grad_out, grad_x, stats, params, param_grads, mode);
  else
    columns_backward(g, x, grad_out, grad_x, stats, params, param_grads, mode);
}

}  // namespace

#define GAAM_ENTRY_POINTS(T, SUFFIX)                                                                                \
  extern "C" void gaam_forward_##SUFFIX(const T* x, T* out, T* stats, const T* params, int64_t outer,              \
                                        int64_t length, int64_t inner, int64_t heads, const int64_t* positions,    \
                                        int64_t positions_stride, const int64_t* starts, int64_t starts_stride,    \
                                        const uint8_t* row_valid, double eps, int mode, int threads) {             \
    const Geometry g{outer, length, inner, heads, positions, positions_stride, starts, starts_stride, row_valid,   \
                     threads};                                                                                     \
    forward<T>(g, x, out, stats, params, static_cast<T>(eps), mode);                                               \
  }                                                                                                                \
  extern "C" void gaam_backward_##SUFFIX(const T* x, const T* grad_out, T* grad_x, const T* stats, const T* params, \
                                         T* param_grads, int64_t outer, int64_t length, int64_t inner,             \
                                         int64_t heads, const int64_t* positions, int64_t positions_stride,        \
                                         const int64_t* starts, int64_t starts_stride, const uint8_t* row_valid,   \
                                         int mode, int threads) {                                                  \
    const Geometry g{outer, length, inner, heads, positions, positions_stride, starts, starts_stride, row_valid,   \
                     threads};                                                                                     \
    backward<T>(g, x, grad_out, grad_x, stats, params, param_grads, mode);                                         \
  }

GAAM_ENTRY_POINTS(float, f32)
GAAM_ENTRY_POINTS(double, f64)

// Columns per tile of the strided layout: the backward returns parameter gradients per (b, h, tile).
extern "C" int64_t gaam_tile_columns() { return kTile; }
