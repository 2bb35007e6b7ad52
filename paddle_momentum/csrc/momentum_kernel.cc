// paddle_momentum's fused momentum kernel (CPU, OpenMP), a Paddle custom operator.
//
// The arithmetic is paddle_momentum/rule.py's: this file holds no copy of it. The functions
// RuleUpdate (the update), RuleClipByValue and RuleL1Decay (the gradient ops of Paddle's
// ClipGradByValue and L1Decay), spliced in below where "@generated rule" stands, are generated
// from rule.py by paddle_momentum/_generate.py (python -m paddle_momentum build --show prints
// them), and so is the list of the rule's attributes (PM_RULE_ATTRIBUTES). What is hand-written
// here is the loop around them: threads, the gradient table, loads and stores, the semantics
// of the Paddle ops they call (which NaN survives), and the norm clips (Paddle's reductions,
// the factor clip_by_norm computes from a norm, the multiply by a factor). The file
// is compiled with -ffp-contract=off so no multiply-add is fused: every operation is rounded
// in the compute type MT, in the rule's order, which keeps the result equal, bit for bit, to
// the composed ops of the rule (and through them to Paddle's own CPU kernel).
//
// Types: float/double parameters compute in their own type. float16/bfloat16 parameters
// compute in float: on a float32 master weight (pm_momentum_master_) or, without one, with
// every intermediate result rounded to the parameter type (pm_momentum_).
//
// Every op updates its tensors in place. The multi-tensor ops take the parameters (with their
// velocities and master weights) and the gradients as two lists that partition the same
// elements differently: a flat buffer holding many small parameters takes the gradients of all
// of them, each still a tensor of its own, so one call updates any number of parameters. The
// table ops take, in place of the parameter and gradient lists, a table of their addresses and
// sizes that gradient_table.cc fills (cheaper than a list of 2000 tensors by about 1 us each).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#ifdef __linux__
#include <sched.h>
#endif

#include "paddle/extension.h"

namespace {

using float16 = phi::dtype::float16;
using bfloat16 = phi::dtype::bfloat16;

// Parallelise only when the work pays for the threads: below ~5 MB moved, one thread is about as
// fast, and in a static program the threads compete with the Executor's own (784-200-10 MLP
// step: 1.09x the built-in with 2 threads on its 157K-element weight, 0.95x with one).
constexpr int64_t kParallelThreshold = 1 << 18;
// A dygraph table call (no Executor beside it) gains from two threads well below that: one
// vector of 256K float32 elements took 256 us on one thread, 151 us on two (the built-in's
// momentum_ 209 us); 64K elements 62 us and 57 us.
constexpr int64_t kTableParallelThreshold = 1 << 15;

// The number of threads an update uses: $PADDLE_MOMENTUM_NUM_THREADS when set, else the CPUs
// this process may run on, shared among the ranks of a data-parallel job on this machine
// ($PADDLE_LOCAL_SIZE, else $PADDLE_TRAINERS_NUM). Not OpenMP's default: Paddle sets
// OMP_NUM_THREADS=1 when it is imported, which left the update on one core (64M elements:
// 33.8 ms instead of 25.9 ms on 2 cores).
int EnvInt(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? 0 : std::atoi(value);
}

int UpdateThreads() {
  static const int threads = [] {
    int cpus = 1;
#if defined(__linux__)
    cpu_set_t allowed;
    cpus = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
#elif defined(_OPENMP)
    cpus = omp_get_num_procs();
#endif
    // (at most the CPUs: 100000 threads aborted the process inside OpenMP; the Python side
    // warns about such a value)
    if (EnvInt("PADDLE_MOMENTUM_NUM_THREADS") > 0) {
      return std::min(EnvInt("PADDLE_MOMENTUM_NUM_THREADS"), std::max(1, cpus));
    }
    int ranks = EnvInt("PADDLE_LOCAL_SIZE") > 0 ? EnvInt("PADDLE_LOCAL_SIZE")
                                                : EnvInt("PADDLE_TRAINERS_NUM");
    return std::max(1, cpus / std::max(1, ranks));
  }();
  return threads;
}

// Inlined into the loop whatever its size (a call in the loop body stops its vectorization).
#if defined(__GNUC__) || defined(__clang__)
#define PM_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define PM_ALWAYS_INLINE inline
#endif

template <typename T>
constexpr bool kIsNarrow =
    std::is_same<T, float16>::value || std::is_same<T, bfloat16>::value;

// ---- Which NaN an operation keeps. ----
// On x86, when both operands of an SSE/AVX add or multiply are NaN the result is the first
// source operand's NaN, quieted; a NaN meeting a number gives that NaN; an invalid operation
// (inf - inf, 0 * inf) gives the default NaN 0xffc00000 (negative). The compiler may swap the
// operands of a commutative operation (differently in a vectorised body and its scalar tail),
// so where two NaNs can meet, the one the built-in keeps is chosen explicitly: a select,
// which vectorises, and changes nothing else (no NaN: the plain a + b, signed zeros included).
// The choices are measured on Paddle 3.3.1's CPU kernels (docs/research/nan_bits.md).

// All ones where x (float or double) is a NaN, else 0; Pick(mask, yes, no) selects bitwise.
// Integer masks, not `x != x ? yes : no`: GCC does not vectorize that select under
// -ftrapping-math (its default), and a loop that is not vectorised is memory-bound no more.
template <typename T>
using BitsOf = typename std::conditional<sizeof(T) == 4, uint32_t, uint64_t>::type;

template <typename T>
inline BitsOf<T> NaNMask(T x) {
  using Signed = typename std::make_signed<BitsOf<T>>::type;
  return static_cast<BitsOf<T>>(-static_cast<Signed>(x != x));
}

template <typename T>
inline T Pick(BitsOf<T> mask, T yes, T no) {
  BitsOf<T> y, n;
  std::memcpy(&y, &yes, sizeof(T));
  std::memcpy(&n, &no, sizeof(T));
  const BitsOf<T> picked = (y & mask) | (n & ~mask);
  T out;
  std::memcpy(&out, &picked, sizeof(T));
  return out;
}

// a + b; when both are NaN, a's NaN (a + a: quieted, as the hardware would).
template <typename T>
inline T AddKeepFirst(T a, T b) {
  return Pick(NaNMask(a), a + a, a + b);
}

// a + b; when both are NaN, b's NaN (b + a keeping its first: the same sum).
template <typename T>
inline T AddKeepSecond(T a, T b) {
  return AddKeepFirst(b, a);
}

// a * b; when both are NaN, a's NaN.
template <typename T>
inline T MulKeepFirst(T a, T b) {
  return Pick(NaNMask(a), a + a, a * b);
}

// Rounds a float result to T and back when T is narrower than the compute type.
template <typename T, typename MT>
inline MT RoundTo(MT x) {
  if constexpr (kIsNarrow<T>) {
    return static_cast<MT>(static_cast<T>(x));
  } else {
    return x;
  }
}

// A double scalar as Paddle's kernels of type T take it (narrow types through float).
template <typename T>
T ScalarAs(double value) {
  if constexpr (kIsNarrow<T>) {
    return static_cast<T>(static_cast<float>(value));
  } else {
    return static_cast<T>(value);
  }
}

// Paddle's CPU ops the generated gradient ops call, one element each (MT: the compute type).
// sign: 1, -1, +0 for either zero, a NaN itself.
template <typename MT>
PM_ALWAYS_INLINE MT SignOf(MT x) {
  return x > MT(0) ? MT(1) : (x < MT(0) ? MT(-1) : (x != x ? x : MT(0)));
}

// abs: the sign bit cleared (a NaN keeps its payload).
template <typename MT>
PM_ALWAYS_INLINE MT AbsOf(MT x) {
  return std::fabs(x);
}

// maximum, minimum: a NaN first operand is kept; else the larger (smaller) one, the second
// where they compare equal (+0 and -0) or the second is a NaN.
template <typename MT>
PM_ALWAYS_INLINE MT MaxOf(MT a, MT b) {
  return Pick(NaNMask(a), a, a > b ? a : b);
}

template <typename MT>
PM_ALWAYS_INLINE MT MinOf(MT a, MT b) {
  return Pick(NaNMask(a), a, a < b ? a : b);
}

// clip: below low, low; above high, high; else (a NaN too) x itself.
template <typename MT>
PM_ALWAYS_INLINE MT ClipTo(MT x, MT low, MT high) {
  return x < low ? low : (x > high ? high : x);
}

// add_n of two tensors (Eigen's a + b): where both are NaN, the first's if first_wins (the
// element's position decides: AddNKeepsFirst), else the second's.
template <typename MT>
PM_ALWAYS_INLINE MT AddN(MT a, MT b, bool first_wins) {
  return first_wins ? AddKeepFirst(a, b) : AddKeepSecond(a, b);
}

// The lanes of Paddle's CPU wheel's AVX packets (8 floats, 4 doubles).
template <typename T>
constexpr int64_t kLanes = std::is_same<T, double>::value ? 4 : 8;

// Whether Paddle's CPU add_n of two tensors of numel elements keeps the first operand's NaN at
// element pos where both are NaN (measured on Paddle 3.2.2, 3.3.0 and 3.3.1, not 3.0.0:
// docs/research/nan_bits.md): its Eigen loop runs blocks of four packets, keeping the first's
// in each block's first packet and the second's in the other three; then whole packets, then
// one half packet, keeping the second's; then single elements, keeping the first's. float16 keeps the second's throughout
// (bfloat16 makes every NaN the same quiet one).
template <typename T>
PM_ALWAYS_INLINE bool AddNKeepsFirst(int64_t pos, int64_t numel) {
  if constexpr (kIsNarrow<T>) {
    return false;
  } else {
    constexpr int64_t kPacket = kLanes<T>, kBlock = 4 * kLanes<T>;
    const int64_t blocks_end = numel / kBlock * kBlock;
    if (pos < blocks_end) return pos % kBlock < kPacket;
    const int64_t rest = numel - blocks_end;
    const int64_t packets_end = blocks_end + rest / kPacket * kPacket +
                                (rest % kPacket >= kPacket / 2 ? kPacket / 2 : 0);
    return pos >= packets_end;
  }
}

// The attributes every update op takes, listed once, as X(type, name): the op registrations,
// the kernel functions' parameters and the Attributes struct below are all expanded from it.
// The Python side passes them by name (paddle_momentum/_boundary.py: kernel_attributes), the
// rule's settings under their names in paddle_momentum/_declarations.py (RULE_SETTINGS), whose
// declared kernel type is the type here: "float32" a float attribute (as Paddle's kernel
// takes mu), "double" an int64_t holding the double's 64 bits, "bool" a bool. The gradient
// ops' numbers (the clip bounds, the L1 coefficient, a norm clip's limit, a global-norm
// factor) cross as doubles' bits too: exact, NaN signs kept, and no text, so no locale can
// change them.
// @generated attributes (PM_RULE_ATTRIBUTES: the rule's settings, _declarations.RULE_SETTINGS)
#define PM_ATTRIBUTES(X)                                                                 \
  PM_RULE_ATTRIBUTES(X) X(int64_t, l2_coeff) X(bool, has_l2) X(bool, first_step)         \
  X(bool, keyword_options) X(bool, has_clip) X(int64_t, clip_min) X(int64_t, clip_max)   \
  X(bool, has_l1) X(int64_t, l1) X(bool, has_scale) X(int64_t, scale)                    \
  X(bool, has_norm_clip) X(int64_t, max_norm)
#define PM_ATTRIBUTE_SPEC(type, name) #name ": " #type,
#define PM_ATTRIBUTE_PARAMETER(type, name) , type name
#define PM_ATTRIBUTE_FIELD(type, name) type name;
#define PM_ATTRIBUTE_NAME(type, name) name,

struct Attributes {
  PM_ATTRIBUTES(PM_ATTRIBUTE_FIELD)
};

double DoubleOfBits(int64_t bits) {
  double value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

// The update's scalars are the attributes themselves (the doubles read with DoubleOfBits):
// the rule's settings and l2_coeff (has_l2: apply the decay), which the generated RuleUpdate
// reads as rule.py does; keyword_options: a keyword-only setting (a torch.optim.SGD option) is
// off its default (the loops without kTorchBit fold them to their defaults); what the built-in
// does to the gradient before its kernel (dygraph buckets only: Paddle's clip and scale ops
// take doubles): has_clip (ClipGradByValue: g = min(max(g, clip_min), clip_max)), has_l1
// (L1Decay: g = g + (sign(p) * l1 + 0)), has_scale (ClipGradByGlobalNorm: g = g * scale,
// written back into the gradient, as the built-in multiplies it in place), has_norm_clip
// (ClipGradByNorm: g = g * scaling(this gradient's norm), not written back); the
// torch.optim.SGD options (rule.py's momentum_update says what each does) and first_step
// (the parameters' first update: torch starts its buffer undamped).
using Hyper = Attributes;
#define PM_HYPER Attributes{PM_ATTRIBUTES(PM_ATTRIBUTE_NAME)}

// @generated rule

// The gradient ops a loop does, as bits of a compile-time choice: a test inside the loop
// stops its vectorization (one-big took 3.5x as long, and 3.7x with the gradient ops' own
// tests inside).
enum GradientOpBits {
  kClipBit = 1,       // ClipGradByValue: g = min(max(g, clip_min), clip_max)
  kL1Bit = 2,         // L1Decay: g = g + (sign(p) * l1 + 0)
  kScaleBit = 4,      // a norm clip: g = g * scale, before the L1 term
  kWriteBackBit = 8,  // ... and the scaled gradient written back (the global norm)
  kTorchBit = 16,     // a torch.optim.SGD option is on (their own loops: the others unchanged)
  kNaNFactorBit = 32,  // the factor is a NaN: whose NaN the scaled gradient keeps is chosen
                       // explicitly (selects that cost 4-6x in a loop: only here)
};

// ``clipped``: the member takes part in its group's clip (its need_clip); the L1 term is not a
// clip and applies to every member.
int GradientOpBitsOf(const Hyper& h, bool clipped) {
  const int clip_bits = (h.has_clip ? kClipBit : 0) |
                        (h.has_scale || h.has_norm_clip ? kScaleBit : 0) |
                        (h.has_scale ? kWriteBackBit : 0);
  return (clipped ? clip_bits : 0) | (h.has_l1 ? kL1Bit : 0) |
         (h.keyword_options ? kTorchBit : 0);
}

// The gradient ops' numbers, as Paddle's ops take them (the generated ops convert them to T).
struct GradientOpConstants {
  explicit GradientOpConstants(const Hyper& h)
      : low(DoubleOfBits(h.clip_min)), high(DoubleOfBits(h.clip_max)), l1(DoubleOfBits(h.l1)) {}
  double low, high, l1;
};

// The built-in's gradient ops before its kernel, in T (the gradient's type): the scale of a
// norm clip (Paddle's multiply by the factor), then the clip (ClipGradByValue) and the L1 term
// (L1Decay), generated from rule.py (RuleClipByValue, RuleL1Decay). add_n_first: where add_n
// meets two NaNs here, the first's is kept (AddNKeepsFirst).
template <typename T, typename MT, int kOps>
PM_ALWAYS_INLINE T GradientOps(T grad, T param, const GradientOpConstants& c, MT scale,
                               bool add_n_first) {
  if constexpr ((kOps & kScaleBit) != 0) {  // (a NaN factor: see MomentumLoopOf)
    grad = static_cast<T>(static_cast<MT>(grad) * scale);
  }
  if constexpr ((kOps & kClipBit) != 0) {
    grad = static_cast<T>(RuleClipByValue<T, MT>(static_cast<MT>(grad), c.low, c.high,
                                                  add_n_first));
  }
  if constexpr ((kOps & kL1Bit) != 0) {
    grad = static_cast<T>(RuleL1Decay<T, MT>(static_cast<MT>(param), static_cast<MT>(grad),
                                             c.l1, add_n_first));
  }
  return grad;
}

// T: parameter type; V: velocity type; MT: compute type; R: the type every intermediate result
// is rounded to (T without a master weight, MT with one). master == nullptr: the parameter
// itself is the value updated; otherwise the float32 master is, and param = T(master).
// A plain serial loop over n elements (vectorised by the compiler); Update() splits the work.
// kOps: the gradient ops (GradientOpBits); scale: the gradient's factor (kScaleBit), as
// Paddle's multiply takes it (type T); factor_wins: a NaN factor's NaN is kept where the
// gradient is NaN too (else the gradient's); position: where element 0 is in its gradient
// tensor of numel elements (add_n's NaNs: AddNKeepsFirst). Per element, after the gradient ops:
// RuleUpdate, the rule's arithmetic (generated from rule.py).
template <typename T, typename V, typename MT, typename R, int kOps>
void MomentumLoopOf(T* __restrict__ param, const T* __restrict__ grad,
                    V* __restrict__ velocity, MT* __restrict__ master, int64_t n, MT lr,
                    const Hyper& h, T scale, bool factor_wins, int64_t position,
                    int64_t numel) {
  const GradientOpConstants constants(h);
  const MT grad_scale = static_cast<MT>(scale);
  // A NaN factor that wins: every scaled gradient is that NaN, quieted.
  const BitsOf<MT> factor_overrides =
      (kOps & kScaleBit) != 0 && factor_wins && scale != scale ? ~BitsOf<MT>(0) : 0;
  const MT factor_nan = grad_scale + grad_scale;
  const RuleSettings rule = RuleSettings::Of(h);  // (a local: read once, kept in registers)
  for (int64_t i = 0; i < n; ++i) {
    T given = grad[i];
    if constexpr ((kOps & kScaleBit) != 0) {
      if constexpr ((kOps & kNaNFactorBit) != 0) {  // the gradient's NaN, or the factor's
        const MT kept = MulKeepFirst(static_cast<MT>(given), grad_scale);
        given = static_cast<T>(Pick<MT>(factor_overrides, factor_nan, kept));
      } else {  // (no NaN factor: no two NaNs meet here, a plain multiply keeps the one there)
        given = GradientOps<T, MT, kScaleBit>(given, param[i], constants, grad_scale, false);
      }
      if constexpr ((kOps & kWriteBackBit) != 0) const_cast<T*>(grad)[i] = given;
    }
    const MT g = static_cast<MT>(GradientOps<T, MT, kOps & (kClipBit | kL1Bit)>(
        given, param[i], constants, grad_scale, AddNKeepsFirst<T>(position + i, numel)));
    MT p = master != nullptr ? master[i] : static_cast<MT>(param[i]);
    MT v = static_cast<MT>(velocity[i]);
    RuleUpdate<MT, R, (kOps & kTorchBit) != 0>(rule, lr, p, g, v);  // (generated from rule.py)
    velocity[i] = static_cast<V>(v);
    if (master != nullptr) master[i] = p;
    param[i] = static_cast<T>(p);
  }
}

// factor_wins_end: the elements [0, factor_wins_end) keep a NaN factor's NaN where the gradient
// is NaN too, the rest the gradient's (as Paddle's multiply, or clip_by_norm, does there);
// position, numel: where element 0 is in its gradient tensor, and that tensor's size.
template <typename T, typename V, typename MT, typename R>
void MomentumLoop(T* param, const T* grad, V* velocity, MT* master, int64_t n, MT lr,
                  const Hyper& h, int ops, T scale, int64_t factor_wins_end, int64_t position,
                  int64_t numel) {
  if ((ops & kScaleBit) != 0 && scale != scale && 0 < factor_wins_end && factor_wins_end < n) {
    MomentumLoop<T, V, MT, R>(param, grad, velocity, master, factor_wins_end, lr, h, ops, scale,
                              factor_wins_end, position, numel);
    const int64_t k = factor_wins_end;
    MomentumLoop<T, V, MT, R>(param + k, grad + k, velocity + k,
                              master == nullptr ? nullptr : master + k, n - k, lr, h, ops,
                              scale, 0, position + k, numel);
    return;
  }
  const bool factor_wins = factor_wins_end > 0;
  if ((ops & kScaleBit) != 0 && scale != scale && (ops & kTorchBit) == 0) {
    ops |= kNaNFactorBit;  // (with a torch option the plain loop: no built-in to equal there)
  }
#define PM_LOOP(bits)                                                                      \
  case bits:                                                                               \
    return MomentumLoopOf<T, V, MT, R, bits>(param, grad, velocity, master, n, lr, h, scale, \
                                             factor_wins, position, numel)
  // The loops of the gradient ops without a norm clip's scaling, and with it, each with the
  // bits of ``extra``.
#define PM_PLAIN_LOOPS(extra)                                              \
  PM_LOOP(extra);                                                          \
  PM_LOOP(extra | kClipBit);                                               \
  PM_LOOP(extra | kL1Bit);                                                 \
  PM_LOOP(extra | kClipBit | kL1Bit)
#define PM_SCALED_LOOPS(extra)                                             \
  PM_LOOP(extra | kScaleBit);                                              \
  PM_LOOP(extra | kScaleBit | kL1Bit);                                     \
  PM_LOOP(extra | kScaleBit | kWriteBackBit);                              \
  PM_LOOP(extra | kScaleBit | kWriteBackBit | kL1Bit)
  switch (ops) {
    PM_PLAIN_LOOPS(0);
    default:
      break;
  }
  // float32 and float64 only: the norm clips (Paddle has no low-precision clip_by_norm or
  // squared_l2_norm on CPU) and the torch options (the dispatcher sends low precision with a
  // torch option to the composed ops: each instantiation costs compile time)
  if constexpr (!kIsNarrow<T>) {
    switch (ops) {
      PM_SCALED_LOOPS(0);
      PM_SCALED_LOOPS(kNaNFactorBit);
      PM_PLAIN_LOOPS(kTorchBit);
      PM_SCALED_LOOPS(kTorchBit);
      default:
        break;
    }
  }
#undef PM_SCALED_LOOPS
#undef PM_PLAIN_LOOPS
#undef PM_LOOP
  PD_THROW("pm_momentum: unsupported combination of gradient ops");
}

// ---- Paddle's CPU sum reduction, bit for bit (docs/research/norm_reductions.md). ----
// squared_l2_norm, sum and clip_by_norm all reduce with Eigen's tree reducer as Paddle's CPU
// wheel compiles it: AVX packets (8 floats, 4 doubles) without multiply-add, leaves of 1024
// packets, two packet accumulators per leaf, a scalar tail, then the packet's lanes halved
// down to one. The lanes below are plain arrays: the order of the additions, not the
// instructions, decides the bits (and -ffp-contract=off forbids multiply-adds).
constexpr int64_t kLeafPackets = 1024;

template <typename T, bool kSquare>
inline T Term(const T* x, int64_t i) {
  if constexpr (kSquare) {
    return x[i] * x[i];
  } else {
    return x[i];
  }
}

// Whose NaN the reductions keep where two meet (docs/research/nan_bits.md): the reducers
// Paddle's CPU wheel compiled are copies of one Eigen template that differ there.
enum class Reducer {
  kSquaredL2Norm,  // squared_l2_norm (ClipGradByGlobalNorm's norms)
  kClipByNorm,     // clip_by_norm's norm (ClipGradByNorm)
};

// a + b keeping a's NaN (SumFirst) or b's (SumSecond) when both are NaN, with kNaNs; without,
// whichever the compiled code keeps (faster: the reductions run without first, and again with
// kNaNs only when the result is a NaN).
template <bool kNaNs, typename T>
inline T SumFirst(T a, T b) {
  if constexpr (kNaNs) {
    return AddKeepFirst(a, b);
  } else {
    return a + b;
  }
}

template <bool kNaNs, typename T>
inline T SumSecond(T a, T b) {
  return SumFirst<kNaNs>(b, a);  // (b + a: the same sum)
}

// One leaf: x[first, first + n), n <= kLanes * kLeafPackets. Where two NaNs meet, the leaf keeps
// (measured, every length up to a leaf's): an accumulator's over the term added to it, the
// second accumulator's over the first (clip_by_norm: the first's), in the first halving of the
// lanes the upper half's, in the later ones the lower half's, and the lanes' over the scalar
// tail's.
template <typename T, bool kSquare, Reducer kReducer, bool kNaNs>
T LeafSum(const T* x, int64_t first, int64_t n) {
  constexpr int64_t W = kLanes<T>;
  const int64_t pairs_end = n / (2 * W) * 2 * W, packets_end = n / W * W;
  T a[W], b[W];
  for (int64_t k = 0; k < W; ++k) a[k] = b[k] = T(0);
  for (int64_t j = 0; j < pairs_end; j += 2 * W) {
    for (int64_t k = 0; k < W; ++k) {
      a[k] = SumFirst<kNaNs>(a[k], Term<T, kSquare>(x, first + j + k));
    }
    for (int64_t k = 0; k < W; ++k) {
      b[k] = SumFirst<kNaNs>(b[k], Term<T, kSquare>(x, first + j + W + k));
    }
  }
  for (int64_t j = pairs_end; j < packets_end; j += W) {
    for (int64_t k = 0; k < W; ++k) {
      a[k] = SumFirst<kNaNs>(a[k], Term<T, kSquare>(x, first + j + k));
    }
  }
  for (int64_t k = 0; k < W; ++k) {
    a[k] = kReducer == Reducer::kClipByNorm ? SumFirst<kNaNs>(a[k], b[k])
                                            : SumSecond<kNaNs>(a[k], b[k]);
  }
  T tail = T(0);
  for (int64_t j = packets_end; j < n; ++j) {
    tail = SumFirst<kNaNs>(tail, Term<T, kSquare>(x, first + j));
  }
  for (int64_t k = 0; k < W / 2; ++k) a[k] = SumSecond<kNaNs>(a[k], a[k + W / 2]);
  for (int64_t width = W / 2; width > 1; width /= 2) {
    for (int64_t k = 0; k < width / 2; ++k) a[k] = SumFirst<kNaNs>(a[k], a[k + width / 2]);
  }
  return SumSecond<kNaNs>(tail, a[0]);
}

// x[first, first + n) summed (kSquare: its squares): halves split at a packet boundary
// counted from x[0], down to leaves. Two halves' NaNs: the left's is kept, as at the top of
// Paddle's tree; deeper down Paddle's choice varies from node to node (inlined copies of its
// recursion), not reproduced (docs/research/nan_bits.md).
template <typename T, bool kSquare, Reducer kReducer, bool kNaNs>
T EigenSum(const T* x, int64_t first, int64_t n) {
  constexpr int64_t W = kLanes<T>;
  if (n <= W * kLeafPackets) return LeafSum<T, kSquare, kReducer, kNaNs>(x, first, n);
  const int64_t split = (first + (n + 1) / 2 + W - 1) / W * W;
  const int64_t left = std::min(split - first, n);
  T sum = T(0) + EigenSum<T, kSquare, kReducer, kNaNs>(x, first, left);
  if (left < n) {
    sum = SumFirst<kNaNs>(sum, EigenSum<T, kSquare, kReducer, kNaNs>(x, split, n - left));
  }
  return sum;
}

// The sum of the squares of x[0, n) as kReducer computes it, its NaN included.
template <typename T, Reducer kReducer>
T SquaredNorm(const T* x, int64_t n) {
  const T sum = EigenSum<T, true, kReducer, false>(x, 0, n);
  return sum == sum ? sum : EigenSum<T, true, kReducer, true>(x, 0, n);
}

// The factor clip_by_norm multiplies a gradient by, from its squared norm (Paddle's
// clip_by_norm kernel: temp = norm <= max; eps = (norm <= 1e-30) * 1e-6;
// scaling = temp + (1 - temp) * max / (norm + eps), each in T).
template <typename T>
T NormClipScaling(T squared_norm, float max_norm) {
  const T norm = std::sqrt(squared_norm), limit = static_cast<T>(max_norm);
  const T within = norm <= limit ? T(1) : T(0);
  const T eps = (norm <= static_cast<T>(1e-30) ? T(1) : T(0)) * static_cast<T>(1e-6);
  return within + (T(1) - within) * limit / (norm + eps);
}

// Each gradient piece's squared L2 norm (Paddle's squared_l2_norm; 0 for a piece without
// data), in parallel over the pieces when there is enough work.
template <typename T, Reducer kReducer = Reducer::kSquaredL2Norm>
std::vector<T> SquaredNorms(const std::vector<const T*>& data,
                            const std::vector<int64_t>& starts) {
  const int64_t pieces = static_cast<int64_t>(data.size());
  std::vector<T> norms(pieces);
#pragma omp parallel for schedule(dynamic, 16) num_threads(UpdateThreads()) \
    if (starts.back() > kParallelThreshold)
  for (int64_t i = 0; i < pieces; ++i) {
    norms[i] = data[i] == nullptr ? T(0)  // (a member skipped: no gradient)
                                  : SquaredNorm<T, kReducer>(data[i], starts[i + 1] - starts[i]);
  }
  return norms;
}

// The learning rate as the compute type: the lr tensor's value (float32 or float64) times a
// parameter's learning-rate scale as Paddle computes ``lr * scale`` (its scale op: x * s + 0
// in lr's dtype, s rounded to it), or the value itself where the scale is 1 (the built-in
// multiplies only then).
template <typename MT>
MT ReadLearningRate(const paddle::Tensor& lr, double scale = 1.0) {
  PD_CHECK(lr.is_cpu() && lr.numel() == 1, "pm_momentum: lr must be one value on the CPU");
  if (lr.dtype() == paddle::DataType::FLOAT64) {
    const double value = lr.data<double>()[0];
    return static_cast<MT>(scale == 1.0 ? value : value * scale + 0.0);
  }
  PD_CHECK(lr.dtype() == paddle::DataType::FLOAT32, "pm_momentum: lr must be float32 or float64");
  const float value = lr.data<float>()[0];
  return static_cast<MT>(scale == 1.0 ? value : value * static_cast<float>(scale) + 0.0f);
}

// Offsets of each tensor in the concatenation of ``tensors``; back() is the total.
std::vector<int64_t> Starts(const std::vector<paddle::Tensor>& tensors) {
  std::vector<int64_t> starts(tensors.size() + 1, 0);
  for (size_t i = 0; i < tensors.size(); ++i) starts[i + 1] = starts[i] + tensors[i].numel();
  return starts;
}

// The gradients, one piece per tensor: its data and where it starts in the concatenation; from
// a gradient table also each piece's parameter and this step's values (else params is empty).
template <typename T>
struct GradientPieces {
  std::vector<const T*> data;  // nullptr: the piece is not updated (a table's member skipped)
  std::vector<int64_t> starts;  // data.size() + 1 entries; back() is the total
  std::vector<T*> params;
  std::vector<double> lr_scales;  // from a table: each member's learning-rate scale
  std::vector<int64_t> flags;     // from a table: each member's flags (PM_FLAG_*)
  std::vector<int64_t> l2, l1;    // from a table: its decay coefficients' bits
};

// Rows of a gradient table (int64 [kTableRows, n]; the numbers come from
// paddle_momentum/_layout.py, as -D flags): gradient_table.cc fills the addresses, the Python
// side each member's values for this step (_flat.FlatBucket).
enum TableRow {
  kParamAddressRow = PM_ROW_PARAM_ADDRESS, kSizeRow = PM_ROW_SIZE,
  kGradAddressRow = PM_ROW_GRAD_ADDRESS, kLrScaleRow = PM_ROW_LR_SCALE, kFlagsRow = PM_ROW_FLAGS,
  kL2Row = PM_ROW_L2, kL1Row = PM_ROW_L1, kTableRows = PM_TABLE_ROW_COUNT
};

// The gradients as the op received them: a tensor list, or a gradient table (int64 [rows, n]:
// the parameters' data addresses, their sizes and the gradients' addresses, written by
// gradient_table.cc after checking that each parameter still lives there and each gradient's
// dtype, size, layout and place against its parameter's, 0 for a member the call skips; and
// each member's values for this step).
class Gradients {
 public:
  explicit Gradients(const std::vector<paddle::Tensor>& tensors) : tensors_(&tensors) {}
  explicit Gradients(const paddle::Tensor& table) : table_(&table) {
    PD_CHECK(table.is_cpu() && table.dtype() == paddle::DataType::INT64 &&
                 table.shape().size() == 2 && table.shape()[0] == kTableRows,
             "pm_momentum: a gradient table is an int64 CPU tensor [kTableRows, n]");
  }

  void Check(paddle::DataType dtype) const {
    if (table_ != nullptr) {
      const int64_t n = table_->shape()[1];
      const int64_t* rows = table_->data<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        PD_CHECK(rows[kParamAddressRow * n + i] != 0,
                 "pm_momentum: the gradient table lacks a parameter");
      }
      return;
    }
    for (const paddle::Tensor& grad : *tensors_) {
      PD_CHECK(grad.is_cpu() && grad.is_dense_tensor() && grad.dtype() == dtype,
               "pm_momentum: gradients must be dense CPU tensors of the parameters' dtype");
    }
  }

  int64_t Total() const {
    int64_t total = 0;
    if (table_ != nullptr) {
      const int64_t n = table_->shape()[1];
      for (int64_t i = 0; i < n; ++i) total += table_->data<int64_t>()[kSizeRow * n + i];
    } else {
      for (const paddle::Tensor& grad : *tensors_) total += grad.numel();
    }
    return total;
  }

  template <typename T>
  GradientPieces<T> Pieces() const {
    GradientPieces<T> pieces;
    if (table_ != nullptr) {
      const int64_t n = table_->shape()[1];
      const int64_t* rows = table_->data<int64_t>();
      pieces.starts.assign(n + 1, 0);
      for (int64_t i = 0; i < n; ++i) {
        pieces.data.push_back(
            reinterpret_cast<const T*>(rows[kGradAddressRow * n + i]));
        pieces.params.push_back(reinterpret_cast<T*>(rows[kParamAddressRow * n + i]));
        pieces.starts[i + 1] = pieces.starts[i] + rows[kSizeRow * n + i];
        pieces.lr_scales.push_back(DoubleOfBits(rows[kLrScaleRow * n + i]));
      }
      pieces.flags.assign(rows + kFlagsRow * n, rows + (kFlagsRow + 1) * n);
      pieces.l2.assign(rows + kL2Row * n, rows + (kL2Row + 1) * n);
      pieces.l1.assign(rows + kL1Row * n, rows + (kL1Row + 1) * n);
    } else {
      pieces.starts = Starts(*tensors_);
      for (const paddle::Tensor& grad : *tensors_) pieces.data.push_back(grad.data<T>());
    }
    return pieces;
  }

 private:
  const std::vector<paddle::Tensor>* tensors_ = nullptr;
  const paddle::Tensor* table_ = nullptr;
};

// The attributes of a table's member i: the op's, with the member's own decay and first-step
// flag (a list's pieces take the op's).
template <typename T>
Hyper PieceHyper(const Hyper& h, const GradientPieces<T>& pieces, size_t i) {
  if (pieces.flags.empty()) return h;
  Hyper piece = h;
  const int64_t flags = pieces.flags[i];
  piece.has_l2 = (flags & PM_FLAG_HAS_L2) != 0;
  piece.l2_coeff = pieces.l2[i];
  piece.has_l1 = (flags & PM_FLAG_HAS_L1) != 0;
  piece.l1 = pieces.l1[i];
  piece.first_step = (flags & PM_FLAG_FIRST_STEP) != 0;
  return piece;
}

// Checks every tensor before anything is written: a failed check leaves all state untouched.
// params is empty when the gradient table carries the parameters (of dtype ``dtype``).
void CheckTensors(const std::vector<paddle::Tensor>& params, const Gradients& grads,
                  const std::vector<paddle::Tensor>& velocities,
                  const std::vector<paddle::Tensor>& masters, paddle::DataType dtype,
                  paddle::DataType velocity_dtype) {
  PD_CHECK(!velocities.empty() && (params.empty() || params.size() == velocities.size()) &&
               (masters.empty() || masters.size() == velocities.size()),
           "pm_momentum: params, velocities and master weights differ in number");
  for (size_t j = 0; j < velocities.size(); ++j) {
    PD_CHECK(velocities[j].is_cpu() && velocities[j].dtype() == velocity_dtype,
             "pm_momentum: velocities must be CPU tensors of the compute dtype");
    if (!params.empty()) {
      PD_CHECK(params[j].is_cpu() && params[j].dtype() == dtype,
               "pm_momentum: parameters must be CPU tensors of one dtype");
      PD_CHECK(velocities[j].numel() == params[j].numel(), "pm_momentum: velocity size differs");
    }
    if (!masters.empty()) {
      PD_CHECK(masters[j].is_cpu() && masters[j].dtype() == paddle::DataType::FLOAT32 &&
                   masters[j].numel() == velocities[j].numel(),
               "pm_momentum: master weights must be float32 of the parameter's size");
    }
  }
  grads.Check(dtype);
  PD_CHECK(Starts(velocities).back() == grads.Total(),
           "pm_momentum: the gradients do not cover the parameters' elements");
}

// The update of every element of the parameters (their concatenation), each thread taking
// an equal share of the elements wherever the tensor boundaries fall: many small tensors cost
// what one buffer of the same size does. The threads walk the two partitions (the state's
// tensors: velocities, master weights and, unless the table holds them, parameters; the
// gradient pieces) together and call MomentumLoop on each piece both agree on.
template <typename T, typename V, typename MT, typename R>
void Update(std::vector<paddle::Tensor>& params, const Gradients& grads,
            std::vector<paddle::Tensor>& velocities, std::vector<paddle::Tensor>& masters,
            const paddle::Tensor& lr, const Hyper& h) {
  const std::vector<int64_t> param_starts = Starts(velocities);  // the state's partition
  const GradientPieces<T> grad_pieces = grads.Pieces<T>();
  // Each gradient piece's learning rate and gradient ops (a table's members each have their
  // own learning-rate scale and need_clip; a list's pieces share the op's).
  const size_t piece_count = grad_pieces.data.size();
  std::vector<MT> piece_lr(piece_count, ReadLearningRate<MT>(lr));
  std::vector<int> piece_ops(piece_count, GradientOpBitsOf(h, true));
  for (size_t i = 0; i < grad_pieces.lr_scales.size(); ++i) {
    if (grad_pieces.data[i] == nullptr) continue;
    piece_lr[i] = ReadLearningRate<MT>(lr, grad_pieces.lr_scales[i]);
    piece_ops[i] = GradientOpBitsOf(PieceHyper(h, grad_pieces, i),
                                    (grad_pieces.flags[i] & PM_FLAG_CLIPPED) != 0);
  }
  const std::vector<int64_t>& grad_starts = grad_pieces.starts;
  const std::vector<const T*>& grad_data = grad_pieces.data;
  const int64_t total = param_starts.back();
  const std::vector<T*>& table_params = grad_pieces.params;  // used when params is empty
  std::vector<T*> param_data(params.size());
  std::vector<V*> velocity_data(velocities.size());
  std::vector<MT*> master_data(velocities.size(), nullptr);
  for (size_t j = 0; j < params.size(); ++j) param_data[j] = params[j].data<T>();
  for (size_t j = 0; j < velocities.size(); ++j) {
    velocity_data[j] = velocities[j].data<V>();
    if constexpr (std::is_same<MT, float>::value) {  // master weights are float32
      if (!masters.empty()) master_data[j] = masters[j].data<float>();
    }
  }
  // The gradients' factors: one for all (a global norm's), one per gradient (each one's own
  // norm), or none.
  std::vector<T> factors;
  T factor = T(1);
  if (h.has_scale || h.has_norm_clip) {
    if constexpr (kIsNarrow<T>) {
      PD_THROW("pm_momentum: norm clips take float32 or float64 gradients");
    } else if (h.has_scale) {
      factor = static_cast<T>(DoubleOfBits(h.scale));
    } else {  // (a skipped piece's factor is not used)
      factors = SquaredNorms<T, Reducer::kClipByNorm>(grad_data, grad_starts);
      for (T& f : factors) f = NormClipScaling<T>(f, static_cast<float>(DoubleOfBits(h.max_norm)));
    }
  }
  if constexpr (kIsNarrow<T>) {  // (checked here: an exception must not leave the threads)
    for (const int ops : piece_ops) {
      PD_CHECK((ops & (kScaleBit | kTorchBit)) == 0,
               "pm_momentum: norm clips and the torch.optim.SGD options take float32 or "
               "float64 parameters");
    }
  }
  const int64_t threshold = params.empty() ? kTableParallelThreshold : kParallelThreshold;
#pragma omp parallel num_threads(UpdateThreads()) if (total > threshold)
  {
#ifdef _OPENMP
    const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
    const int64_t threads = 1, me = 0;
#endif
    const int64_t begin = total * me / threads, end = total * (me + 1) / threads;
    size_t j = std::upper_bound(param_starts.begin(), param_starts.end(), begin) -
               param_starts.begin() - 1;
    size_t i = std::upper_bound(grad_starts.begin(), grad_starts.end(), begin) -
               grad_starts.begin() - 1;
    for (int64_t at = begin; at < end;) {
      while (param_starts[j + 1] <= at) ++j;  // steps over empty tensors
      while (grad_starts[i + 1] <= at) ++i;
      const int64_t stop = std::min({end, param_starts[j + 1], grad_starts[i + 1]});
      if (grad_data[i] == nullptr) {  // a member the call skips (no gradient, or elsewhere)
        at = stop;
        continue;
      }
      const int64_t offset = at - param_starts[j];
      T* param = params.empty() ? table_params[i] + (at - grad_starts[i])
                                : param_data[j] + offset;
      // Where a NaN factor's NaN wins over a NaN gradient's (measured): Paddle's multiply by
      // a [1] factor keeps the factor's unless the gradient is one element (its shape [1] or
      // [] assumed: a [1, 1] one keeps the factor's too); clip_by_norm keeps the factor's in
      // its packets and at the first element after them when 1 to 3 remain, the gradient's
      // in the rest of the tail.
      const int64_t numel = grad_starts[i + 1] - grad_starts[i];
      const int64_t packets = numel / kLanes<T> * kLanes<T>, rest = numel - packets;
      const int64_t wins_end = h.has_scale ? (numel == 1 ? 0 : numel)
                                           : packets + (rest >= 1 && rest <= 3 ? 1 : 0);
      MomentumLoop<T, V, MT, R>(param, grad_data[i] + (at - grad_starts[i]),
                                velocity_data[j] + offset,
                                master_data[j] == nullptr ? nullptr : master_data[j] + offset,
                                stop - at, piece_lr[i], PieceHyper(h, grad_pieces, i),
                                piece_ops[i],
                                factors.empty() ? factor : factors[i],
                                std::max<int64_t>(0, wins_end - (at - grad_starts[i])),
                                at - grad_starts[i], numel);
      at = stop;
    }
  }
}

// Calls f(T{}) for the parameter type T of ``dtype``.
template <typename F>
void DispatchParameterType(paddle::DataType dtype, const char* op, F&& f) {
  switch (dtype) {
    case paddle::DataType::FLOAT32:
      return f(float{});
    case paddle::DataType::FLOAT64:
      return f(double{});
    case paddle::DataType::FLOAT16:
      return f(float16{});
    case paddle::DataType::BFLOAT16:
      return f(bfloat16{});
    default:
      PD_THROW(op, ": unsupported parameter dtype");
  }
}

// Without master weights: float/double compute in their own type, float16/bfloat16 in float
// with every result rounded back to the parameter type. dtype: the parameters'.
void UpdateWithoutMaster(std::vector<paddle::Tensor>& params,  // NOLINT
                         const Gradients& grads,
                         std::vector<paddle::Tensor>& velocities,  // NOLINT
                         const paddle::Tensor& lr, const Hyper& h, paddle::DataType dtype) {
  std::vector<paddle::Tensor> no_masters;
  CheckTensors(params, grads, velocities, no_masters, dtype, dtype);
  DispatchParameterType(dtype, "pm_momentum", [&](auto type_tag) {
    using T = decltype(type_tag);
    using MT = typename std::conditional<kIsNarrow<T>, float, T>::type;
    Update<T, T, MT, T>(params, grads, velocities, no_masters, lr, h);
  });
}

// With float32 master weights (float16/bfloat16 parameters): the update runs on the master.
void UpdateWithMaster(std::vector<paddle::Tensor>& params,  // NOLINT
                      const Gradients& grads,
                      std::vector<paddle::Tensor>& velocities,  // NOLINT
                      std::vector<paddle::Tensor>& masters,  // NOLINT
                      const paddle::Tensor& lr, const Hyper& h, paddle::DataType dtype) {
  CheckTensors(params, grads, velocities, masters, dtype, paddle::DataType::FLOAT32);
  PD_CHECK(masters.size() == velocities.size(), "pm_momentum_master: one master per parameter");
  switch (dtype) {
    case paddle::DataType::FLOAT16:
      return Update<float16, float, float, float>(params, grads, velocities, masters, lr, h);
    case paddle::DataType::BFLOAT16:
      return Update<bfloat16, float, float, float>(params, grads, velocities, masters, lr, h);
    default:
      PD_THROW("pm_momentum_master: parameters must be float16 or bfloat16");
  }
}

// The parameter dtype a table op is told by name.
paddle::DataType DtypeNamed(const std::string& name) {
  if (name == "float32") return paddle::DataType::FLOAT32;
  if (name == "float64") return paddle::DataType::FLOAT64;
  if (name == "float16") return paddle::DataType::FLOAT16;
  if (name == "bfloat16") return paddle::DataType::BFLOAT16;
  PD_THROW("pm_momentum: unsupported parameter dtype ", name);
}

}  // namespace

// ---- One tensor (or one flat buffer and its one gradient). ----
void MomentumInplace(paddle::Tensor& param, const paddle::Tensor& grad,  // NOLINT
                     paddle::Tensor& velocity,  // NOLINT
                     const paddle::Tensor& lr PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  std::vector<paddle::Tensor> params{param}, grads{grad}, velocities{velocity};
  UpdateWithoutMaster(params, Gradients(grads), velocities, lr, PM_HYPER, param.dtype());
}

void MomentumMasterInplace(paddle::Tensor& param, const paddle::Tensor& grad,  // NOLINT
                           paddle::Tensor& velocity, const paddle::Tensor& lr,  // NOLINT
                           paddle::Tensor& master  // NOLINT
                           PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  std::vector<paddle::Tensor> params{param}, grads{grad}, velocities{velocity}, masters{master};
  UpdateWithMaster(params, Gradients(grads), velocities, masters, lr, PM_HYPER, param.dtype());
}

PD_BUILD_OP(pm_momentum)
    .Inputs({"Param", "Grad", "Velocity", "LearningRate"})
    .Outputs({"ParamOut", "VelocityOut"})
    .Attrs({PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetInplaceMap({{"Param", "ParamOut"}, {"Velocity", "VelocityOut"}})
    .SetKernelFn(PD_KERNEL(MomentumInplace));

PD_BUILD_OP(pm_momentum_master)
    .Inputs({"Param", "Grad", "Velocity", "LearningRate", "Master"})
    .Outputs({"ParamOut", "VelocityOut", "MasterOut"})
    .Attrs({PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetInplaceMap({{"Param", "ParamOut"}, {"Velocity", "VelocityOut"}, {"Master", "MasterOut"}})
    .SetKernelFn(PD_KERNEL(MomentumMasterInplace));

// ---- Lists: Param/Velocity(/Master) tensors and Grad tensors partition the same elements. ----
void MomentumMultiInplace(std::vector<paddle::Tensor>& params,  // NOLINT
                          const std::vector<paddle::Tensor>& grads,
                          std::vector<paddle::Tensor>& velocities,  // NOLINT
                          const paddle::Tensor& lr PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  if (params.empty() && grads.empty()) return;
  PD_CHECK(!params.empty(), "pm_momentum: gradients without parameters");
  UpdateWithoutMaster(params, Gradients(grads), velocities, lr, PM_HYPER, params[0].dtype());
}

void MomentumMultiMasterInplace(std::vector<paddle::Tensor>& params,  // NOLINT
                                const std::vector<paddle::Tensor>& grads,
                                std::vector<paddle::Tensor>& velocities,  // NOLINT
                                const paddle::Tensor& lr,
                                std::vector<paddle::Tensor>& masters  // NOLINT
                                PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  if (params.empty() && grads.empty()) return;
  PD_CHECK(!params.empty(), "pm_momentum: gradients without parameters");
  UpdateWithMaster(params, Gradients(grads), velocities, masters, lr, PM_HYPER,
                   params[0].dtype());
}

PD_BUILD_OP(pm_momentum_multi)
    .Inputs({paddle::Vec("Param"), paddle::Vec("Grad"), paddle::Vec("Velocity"),
             "LearningRate"})
    .Outputs({paddle::Vec("ParamOut"), paddle::Vec("VelocityOut")})
    .Attrs({PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetInplaceMap({{paddle::Vec("Param"), paddle::Vec("ParamOut")},
                    {paddle::Vec("Velocity"), paddle::Vec("VelocityOut")}})
    .SetKernelFn(PD_KERNEL(MomentumMultiInplace));

PD_BUILD_OP(pm_momentum_multi_master)
    .Inputs({paddle::Vec("Param"), paddle::Vec("Grad"), paddle::Vec("Velocity"),
             "LearningRate", paddle::Vec("Master")})
    .Outputs({paddle::Vec("ParamOut"), paddle::Vec("VelocityOut"), paddle::Vec("MasterOut")})
    .Attrs({PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetInplaceMap({{paddle::Vec("Param"), paddle::Vec("ParamOut")},
                    {paddle::Vec("Velocity"), paddle::Vec("VelocityOut")},
                    {paddle::Vec("Master"), paddle::Vec("MasterOut")}})
    .SetKernelFn(PD_KERNEL(MomentumMultiMasterInplace));

// ---- A gradient table (gradient_table.cc) in place of the parameter and gradient lists. ----
// Dygraph only: the table holds the parameters' and gradients' addresses and each member's
// values for this step (learning-rate scale, flags: clipped or not, its decay, its first step;
// the op's own has_l2, l2_coeff, has_l1, l1 and first_step are not read); a member whose
// gradient address is 0 is not updated; velocities and master weights come as lists (flat
// buffers and large members' own tensors), all written through without being declared
// in-place outputs, which would cost ~2.5 us per list element for the output tensors Paddle
// makes (a static program must see the writes: it uses the ops above). param_dtype names the
// parameters' dtype.
void MomentumTable(const paddle::Tensor& grad_table,
                   const std::vector<paddle::Tensor>& velocities, const paddle::Tensor& lr,
                   const std::string& param_dtype PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  std::vector<paddle::Tensor> no_params, written_velocities(velocities);
  UpdateWithoutMaster(no_params, Gradients(grad_table), written_velocities, lr, PM_HYPER,
                      DtypeNamed(param_dtype));
}

void MomentumTableMaster(const paddle::Tensor& grad_table,
                         const std::vector<paddle::Tensor>& velocities,
                         const paddle::Tensor& lr, const std::vector<paddle::Tensor>& masters,
                         const std::string& param_dtype PM_ATTRIBUTES(PM_ATTRIBUTE_PARAMETER)) {
  std::vector<paddle::Tensor> no_params, written_velocities(velocities),
      written_masters(masters);
  UpdateWithMaster(no_params, Gradients(grad_table), written_velocities, written_masters, lr,
                   PM_HYPER, DtypeNamed(param_dtype));
}

PD_BUILD_OP(pm_momentum_table)
    .Inputs({"GradTable", paddle::Vec("Velocity"), "LearningRate"})
    .Outputs({})
    .Attrs({"param_dtype: std::string", PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetKernelFn(PD_KERNEL(MomentumTable));

PD_BUILD_OP(pm_momentum_table_master)
    .Inputs({"GradTable", paddle::Vec("Velocity"), "LearningRate", paddle::Vec("Master")})
    .Outputs({})
    .Attrs({"param_dtype: std::string", PM_ATTRIBUTES(PM_ATTRIBUTE_SPEC)})
    .SetKernelFn(PD_KERNEL(MomentumTableMaster));

// ---- The squared L2 norm of each gradient in a gradient table (ClipGradByGlobalNorm's
// squared_l2_norm of each, bit for bit), written into Out (float32 or float64, one element
// per member, of the parameters' dtype). ----
void SquaredNormsOfTable(const paddle::Tensor& grad_table, const paddle::Tensor& out) {
  const Gradients grads(grad_table);
  grads.Check(out.dtype());
  PD_CHECK(out.is_cpu() && out.numel() == grad_table.shape()[1],
           "pm_squared_norms: Out must be a CPU tensor with one element per member");
  auto write = [&](auto type_tag) {
    using T = decltype(type_tag);
    const GradientPieces<T> pieces = grads.Pieces<T>();
    const std::vector<T> norms = SquaredNorms<T>(pieces.data, pieces.starts);
    std::copy(norms.begin(), norms.end(), const_cast<T*>(out.data<T>()));
  };
  if (out.dtype() == paddle::DataType::FLOAT64) {
    write(double{});
  } else {
    PD_CHECK(out.dtype() == paddle::DataType::FLOAT32,
             "pm_squared_norms: float32 or float64 gradients only");
    write(float{});
  }
}

PD_BUILD_OP(pm_squared_norms)
    .Inputs({"GradTable", "Out"})
    .Outputs({})
    .SetKernelFn(PD_KERNEL(SquaredNormsOfTable));
