// reduce.cc -- bit-exact plain-C++ re-implementations of the CPU reductions
// used by PaddlePaddle 3.3.1 (manylinux CPU wheel) gradient clipping in dygraph.
//
// Build:  g++ -O2 -ffp-contract=off -shared -fPIC reduce.cc -o libreduce.so
// (-ffp-contract=off is REQUIRED: Paddle's result has the square rounded to
//  T before every add, i.e. no FMA anywhere; the wheel's Eigen code is built
//  for AVX (256-bit) without FMA contraction.)
//
// ---------------------------------------------------------------------------
// What Paddle does (CPU, Eigen::DefaultDevice => single threaded, no OpenMP):
//   squared_l2_norm(x)      : out = Eigen(x.square().sum())           [shape [1]]
//   paddle.sum(stack(list)) : SumFunctor, reduce_all => Eigen(flat(x).sum())
//   clip_by_norm(x, m)      : norm = sqrt(x.square().sum()); scale; x*scale
// All three end up in Eigen's
//   InnerMostDimReducer<Self, SumReducer<T>, Vectorizable=true, UseTreeReduction=true>
// (Eigen commit f612df27 as pinned by Paddle; identical to Eigen 3.4.0 here)
// with the AVX packet:  W = 8 lanes for float (Packet8f), W = 4 lanes for
// double (Packet4d)   (SSE W=4/2 and AVX-512 W=16/8 were tested and rejected).
//
// Algorithm  reduce(first, n)   (v(i) = x[i]*x[i] rounded to T, or x[i] for sum)
//   kLeafSize = 1024.
//   if n > W*1024:                       // tree split, split point packet-aligned
//       split = W * ceil( (first + ceil(n/2)) / W )       (absolute index)
//       nl    = min(split - first, n)
//       acc   = 0 + reduce(first, nl)
//       if nl < n: acc = acc + reduce(split, n - nl)
//       return acc
//   else  (leaf):
//       U  = floor(n / 2W) * 2W ;  V = floor(n / W) * W
//       p1[0..W) = 0, p2[0..W) = 0                 // two packet accumulators
//       for j in [0,U) step 2W:  p1 += v[j .. j+W) ; p2 += v[j+W .. j+2W)   (lane-wise)
//       for j in [U,V) step W:   p1 += v[j .. j+W)       (at most one packet)
//       p1 += p2                                         (lane-wise)
//       s = 0;  for j in [V,n): s = s + v(j)             (scalar tail, in order)
//       return s + predux(p1)
//   predux (AVX):   float  : b[i]=p[i]+p[i+4] (i<4); c0=b0+b2, c1=b1+b3; r=c0+c1
//                   double : b0=p0+p2, b1=p1+p3;  r=b0+b1
//   i.e. repeated halving "lower half += upper half" down to one lane.
// Note "first" is an absolute index, so the split points of the right subtrees
// depend on the global offset (we reproduce that exactly).
// ---------------------------------------------------------------------------
#include <cmath>
#include <cstdint>

typedef int64_t Index;

template <typename T> struct Lanes;
template <> struct Lanes<float>  { static const int W = 8; };   // Packet8f
template <> struct Lanes<double> { static const int W = 4; };   // Packet4d
static const Index kLeafSize = 1024;

template <typename T, bool SQ>
static inline T val(const T* x, Index i) {
  if (SQ) { T a = x[i]; return a * a; }   // rounded product (no FMA)
  return x[i];
}

// Eigen predux for Packet8f / Packet4d on AVX: halve until one lane.
template <typename T, int W>
static inline T predux(const T* p) {
  T b[W];
  for (int i = 0; i < W; ++i) b[i] = p[i];
  for (int w = W; w > 1; w /= 2)
    for (int i = 0; i < w / 2; ++i) b[i] = b[i] + b[i + w / 2];
  return b[0];
}

template <typename T, bool SQ>
static T leaf(const T* x, Index first, Index n) {
  const int W = Lanes<T>::W;
  const Index U = (n / (2 * W)) * 2 * W;
  const Index V = (n / W) * W;
  T p1[W], p2[W];
  for (int k = 0; k < W; ++k) { p1[k] = T(0); p2[k] = T(0); }
  for (Index j = 0; j < U; j += 2 * W) {
    for (int k = 0; k < W; ++k) p1[k] = p1[k] + val<T, SQ>(x, first + j + k);
    for (int k = 0; k < W; ++k) p2[k] = p2[k] + val<T, SQ>(x, first + j + W + k);
  }
  for (Index j = U; j < V; j += W)
    for (int k = 0; k < W; ++k) p1[k] = p1[k] + val<T, SQ>(x, first + j + k);
  for (int k = 0; k < W; ++k) p1[k] = p1[k] + p2[k];
  T s = T(0);
  for (Index j = V; j < n; ++j) s = s + val<T, SQ>(x, first + j);
  return s + predux<T, W>(p1);
}

template <typename T, bool SQ>
static T eigen_sum(const T* x, Index first, Index n) {
  const Index W = Lanes<T>::W;
  if (n > W * kLeafSize) {
    const Index half = (n + 1) / 2;                       // divup(n, 2)
    const Index split = W * ((first + half + W - 1) / W); // packet aligned
    const Index nl = (split - first < n) ? split - first : n;
    T acc = T(0);
    acc = acc + eigen_sum<T, SQ>(x, first, nl);
    if (nl < n) acc = acc + eigen_sum<T, SQ>(x, split, n - nl);
    return acc;
  }
  return leaf<T, SQ>(x, first, n);
}

extern "C" {

// 1. paddle._C_ops.squared_l2_norm(x), contiguous 1-D (any shape: flattened)
float paddle_squared_l2_norm_f32(const float* x, Index n) {
  return eigen_sum<float, true>(x, 0, n);
}
double paddle_squared_l2_norm_f64(const double* x, Index n) {
  return eigen_sum<double, true>(x, 0, n);
}

// 2. paddle.sum(paddle.stack(parts)) over k partial sums (reduce_all sum)
float paddle_sum_f32(const float* x, Index k) {
  return eigen_sum<float, false>(x, 0, k);
}
double paddle_sum_f64(const double* x, Index k) {
  return eigen_sum<double, false>(x, 0, k);
}

// ClipGradByGlobalNorm._dygraph_clip: global sum of squares.
//   fp32 grads -> sum_square_list_fp32, fp64 grads -> sum_square_list.
//   sum_dtype = float64 if any fp64 grad else float32.
//   g = [ sum_f32(fp32 parts) (cast to f64 if sum_dtype=f64) , sum_f64(fp64 parts) ]
//   global = sum(stack(g))   (a second async_add_n; for one entry it is the identity)
// Returns the global sum of squares as double (exact value of the float32
// result when there are no fp64 parts).
double paddle_global_sumsq(const float* p32, Index k32, const double* p64, Index k64) {
  double g[2]; Index m = 0;
  if (k32 > 0) {
    float s = paddle_sum_f32(p32, k32);
    if (k64 == 0) { float one = s; return (double)paddle_sum_f32(&one, 1); }
    g[m++] = (double)s;
  }
  if (k64 > 0) g[m++] = paddle_sum_f64(p64, k64);
  if (m == 0) return 0.0;
  return paddle_sum_f64(g, m);
}

// Global-norm clip factor exactly as _dygraph_clip (auto_skip_clip=False):
//   clip_var = clip_norm / max(sqrt(global), clip_norm)   in sum_dtype,
//   each grad is then multiplied elementwise by clip_var cast to grad dtype.
float paddle_global_clip_factor_f32(float global_sumsq, float clip_norm) {
  float n = std::sqrt(global_sumsq);
  float m = (n > clip_norm || std::isnan(n)) ? n : clip_norm;  // paddle.maximum
  return clip_norm / m;
}
double paddle_global_clip_factor_f64(double global_sumsq, double clip_norm) {
  double n = std::sqrt(global_sumsq);
  double m = (n > clip_norm || std::isnan(n)) ? n : clip_norm;
  return clip_norm / m;
}

// 3. clip_by_norm (ClipGradByNorm), float32, CPU kernel
//    (paddle/phi/kernels/impl/clip_by_norm_kernel_impl.h):
//   norm    = sqrt(x.square().sum())              (same reduction as above)
//   temp    = (norm <= max_norm) ? 1 : 0
//   eps     = (norm <= 1e-30f) ? 1e-6f : 0
//   scaling = temp + ((1 - temp) * max_norm) / (norm + eps)
//   out[i]  = x[i] * scaling
// Returns the norm; writes out (may alias x).
float paddle_clip_by_norm_f32(const float* x, Index n, float max_norm, float* out) {
  const float norm = std::sqrt(paddle_squared_l2_norm_f32(x, n));
  const float temp = (norm <= max_norm) ? 1.0f : 0.0f;
  const float eps = (norm <= 1e-30f ? 1.0f : 0.0f) * 1e-6f;
  const float scaling = temp + (1.0f - temp) * max_norm / (norm + eps);
  for (Index i = 0; i < n; ++i) out[i] = x[i] * scaling;
  return norm;
}

}  // extern "C"
