// paddle_momentum's fused momentum kernel (CPU, OpenMP), a Paddle custom operator.
//
// The same arithmetic as paddle_momentum.rule.momentum_update, one pass over memory:
//
//   g' = p*c + s*g ;  v = v*mu + g' ;  p = p - lr*v   (Nesterov: p = p - (g' + v*mu)*lr)
//
// (g' = g when there is no fused decay.) Every operation is rounded in the compute type MT, in exactly this order, and the file is
// compiled with -ffp-contract=off so no multiply-add is fused: that is what keeps the result
// equal, bit for bit, to Paddle's own CPU kernel and to the composed-ops reference.
//
// Types: float/double parameters compute in their own type. float16/bfloat16 parameters
// compute in float: on a float32 master weight (pm_momentum_master_) or, without one, with
// every intermediate result rounded to the parameter type (pm_momentum_).
//
// Both ops update their tensors in place; they take any contiguous tensors, so one call can
// update a whole flat buffer holding many parameters.

#include <algorithm>
#include <cstdint>
#include <cstdlib>
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

// Parallelise only when the work pays for the threads' start-up.
constexpr int64_t kParallelThreshold = 1 << 15;

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
    if (EnvInt("PADDLE_MOMENTUM_NUM_THREADS") > 0) return EnvInt("PADDLE_MOMENTUM_NUM_THREADS");
    int cpus = 1;
#if defined(__linux__)
    cpu_set_t allowed;
    cpus = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
#elif defined(_OPENMP)
    cpus = omp_get_num_procs();
#endif
    int ranks = EnvInt("PADDLE_LOCAL_SIZE") > 0 ? EnvInt("PADDLE_LOCAL_SIZE")
                                                : EnvInt("PADDLE_TRAINERS_NUM");
    return std::max(1, cpus / std::max(1, ranks));
  }();
  return threads;
}

template <typename T>
constexpr bool kIsNarrow =
    std::is_same<T, float16>::value || std::is_same<T, bfloat16>::value;

// Rounds a float result to T and back when T is narrower than the compute type.
template <typename T, typename MT>
inline MT RoundTo(MT x) {
  if constexpr (kIsNarrow<T>) {
    return static_cast<MT>(static_cast<T>(x));
  } else {
    return x;
  }
}

struct Hyper {
  float mu;          // momentum, a float32 attribute as in Paddle's kernel
  float l2;          // fused L2 coefficient
  bool has_l2;       // apply it (a coefficient of 0 still turns an infinite p into NaN)
  float rescale;     // rescale_grad (1: none)
  bool nesterov;
};

// T: parameter type; G: gradient type; V: velocity type; MT: compute type; R: the type every
// intermediate result is rounded to (T without a master weight, MT with one).
// master == nullptr: the parameter itself is the value updated. Otherwise the float32 master
// is updated and param = T(master).
template <typename T, typename G, typename V, typename MT, typename R>
void MomentumLoop(T* param, const G* grad, V* velocity, MT* master, int64_t n, MT lr,
                  const Hyper& h) {
  const MT mu = static_cast<MT>(h.mu);
  const MT l2 = static_cast<MT>(h.l2);
  const MT rescale = static_cast<MT>(h.rescale);
  const bool has_l2 = h.has_l2;
  const bool has_rescale = h.rescale != 1.0f;
  const bool nesterov = h.nesterov;
#pragma omp parallel for schedule(static) num_threads(UpdateThreads()) if (n > kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    MT g = static_cast<MT>(grad[i]);
    if (has_rescale) g = RoundTo<R, MT>(g * rescale);
    const MT p = master != nullptr ? master[i] : static_cast<MT>(param[i]);
    if (has_l2) g = RoundTo<R, MT>(RoundTo<R, MT>(p * l2) + g);
    const MT v = RoundTo<R, MT>(RoundTo<R, MT>(static_cast<MT>(velocity[i]) * mu) + g);
    MT step;
    if (nesterov) {
      step = RoundTo<R, MT>(RoundTo<R, MT>(g + RoundTo<R, MT>(v * mu)) * lr);
    } else {
      step = RoundTo<R, MT>(lr * v);
    }
    const MT updated = RoundTo<R, MT>(p - step);
    velocity[i] = static_cast<V>(v);
    if (master != nullptr) master[i] = updated;
    param[i] = static_cast<T>(updated);
  }
}

// The learning rate as the compute type (the lr tensor may be float32 or float64).
template <typename MT>
MT ReadLearningRate(const paddle::Tensor& lr) {
  if (lr.dtype() == paddle::DataType::FLOAT64) {
    return static_cast<MT>(lr.data<double>()[0]);
  }
  PD_CHECK(lr.dtype() == paddle::DataType::FLOAT32, "lr must be float32 or float64");
  return static_cast<MT>(lr.data<float>()[0]);
}

void CheckCommon(const paddle::Tensor& param, const paddle::Tensor& grad,
                 const paddle::Tensor& velocity, const paddle::Tensor& lr) {
  PD_CHECK(param.is_cpu() && grad.is_cpu() && velocity.is_cpu() && lr.is_cpu(),
           "pm_momentum: CPU tensors only");
  PD_CHECK(param.numel() == grad.numel() && param.numel() == velocity.numel(),
           "pm_momentum: param, grad and velocity sizes differ");
  PD_CHECK(grad.dtype() == param.dtype(), "pm_momentum: grad dtype must equal param dtype");
  PD_CHECK(lr.numel() == 1, "pm_momentum: lr must hold one value");
}

template <typename T>
void RunWithoutMaster(paddle::Tensor& param, const paddle::Tensor& grad,
                      paddle::Tensor& velocity, const paddle::Tensor& lr, const Hyper& h) {
  using MT = typename std::conditional<kIsNarrow<T>, float, T>::type;
  PD_CHECK(velocity.dtype() == param.dtype(), "pm_momentum: velocity dtype must equal param's");
  MomentumLoop<T, T, T, MT, T>(param.data<T>(), grad.data<T>(), velocity.data<T>(),
                            static_cast<MT*>(nullptr), param.numel(),
                            ReadLearningRate<MT>(lr), h);
}

template <typename T>
void RunWithMaster(paddle::Tensor& param, const paddle::Tensor& grad, paddle::Tensor& velocity,
                   const paddle::Tensor& lr, paddle::Tensor& master, const Hyper& h) {
  PD_CHECK(velocity.dtype() == paddle::DataType::FLOAT32 &&
               master.dtype() == paddle::DataType::FLOAT32,
           "pm_momentum_master: velocity and master must be float32");
  PD_CHECK(master.numel() == param.numel(), "pm_momentum_master: master size differs");
  MomentumLoop<T, T, float, float, float>(param.data<T>(), grad.data<T>(), velocity.data<float>(),
                                   master.data<float>(), param.numel(),
                                   ReadLearningRate<float>(lr), h);
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

}  // namespace

void MomentumInplace(paddle::Tensor& param, const paddle::Tensor& grad,  // NOLINT
                     paddle::Tensor& velocity, const paddle::Tensor& lr,  // NOLINT
                     float mu, float l2, bool has_l2, float rescale, bool nesterov) {
  CheckCommon(param, grad, velocity, lr);
  const Hyper h{mu, l2, has_l2, rescale, nesterov};
  DispatchParameterType(param.dtype(), "pm_momentum", [&](auto type_tag) {
    RunWithoutMaster<decltype(type_tag)>(param, grad, velocity, lr, h);
  });
}

void MomentumMasterInplace(paddle::Tensor& param, const paddle::Tensor& grad,  // NOLINT
                           paddle::Tensor& velocity, const paddle::Tensor& lr,  // NOLINT
                           paddle::Tensor& master,  // NOLINT
                           float mu, float l2, bool has_l2, float rescale, bool nesterov) {
  CheckCommon(param, grad, velocity, lr);
  const Hyper h{mu, l2, has_l2, rescale, nesterov};
  switch (param.dtype()) {
    case paddle::DataType::FLOAT16:
      return RunWithMaster<float16>(param, grad, velocity, lr, master, h);
    case paddle::DataType::BFLOAT16:
      return RunWithMaster<bfloat16>(param, grad, velocity, lr, master, h);
    default:
      PD_THROW("pm_momentum_master: parameters must be float16 or bfloat16");
  }
}

PD_BUILD_OP(pm_momentum)
    .Inputs({"Param", "Grad", "Velocity", "LearningRate"})
    .Outputs({"ParamOut", "VelocityOut"})
    .Attrs({"mu: float", "l2: float", "has_l2: bool", "rescale: float", "nesterov: bool"})
    .SetInplaceMap({{"Param", "ParamOut"}, {"Velocity", "VelocityOut"}})
    .SetKernelFn(PD_KERNEL(MomentumInplace));

PD_BUILD_OP(pm_momentum_master)
    .Inputs({"Param", "Grad", "Velocity", "LearningRate", "Master"})
    .Outputs({"ParamOut", "VelocityOut", "MasterOut"})
    .Attrs({"mu: float", "l2: float", "has_l2: bool", "rescale: float", "nesterov: bool"})
    .SetInplaceMap({{"Param", "ParamOut"}, {"Velocity", "VelocityOut"}, {"Master", "MasterOut"}})
    .SetKernelFn(PD_KERNEL(MomentumMasterInplace));

// The same update for a list of parameters sharing their settings, in one call and one
// parallel region: the threads split the list's elements as if the tensors were concatenated,
// so many tensors cost about what one flat buffer of the same size does, without a copy.
namespace {

template <typename T>
void RunMulti(std::vector<paddle::Tensor>& params, const std::vector<paddle::Tensor>& grads,
              std::vector<paddle::Tensor>& velocities, const paddle::Tensor& lr,
              const Hyper& h) {
  using MT = typename std::conditional<kIsNarrow<T>, float, T>::type;
  const MT learning_rate = ReadLearningRate<MT>(lr);
  std::vector<int64_t> starts(params.size() + 1, 0);
  for (size_t i = 0; i < params.size(); ++i) {
    CheckCommon(params[i], grads[i], velocities[i], lr);
    PD_CHECK(params[i].dtype() == params[0].dtype() &&
                 velocities[i].dtype() == params[0].dtype(),
             "pm_momentum_multi: every tensor must have the first parameter's dtype");
    starts[i + 1] = starts[i] + params[i].numel();
  }
  const int64_t total = starts.back();
#pragma omp parallel num_threads(UpdateThreads()) if (total > kParallelThreshold)
  {
#ifdef _OPENMP
    const int64_t threads = omp_get_num_threads(), me = omp_get_thread_num();
#else
    const int64_t threads = 1, me = 0;
#endif
    const int64_t begin = total * me / threads, end = total * (me + 1) / threads;
    for (size_t i = 0; i < params.size(); ++i) {
      const int64_t from = std::max(begin, starts[i]), to = std::min(end, starts[i + 1]);
      if (from >= to) continue;
      const int64_t offset = from - starts[i];
      MomentumLoop<T, T, T, MT, T>(params[i].data<T>() + offset, grads[i].data<T>() + offset,
                                   velocities[i].data<T>() + offset, static_cast<MT*>(nullptr),
                                   to - from, learning_rate, h);
    }
  }
}

}  // namespace

void MomentumMultiInplace(std::vector<paddle::Tensor>& params,  // NOLINT
                          const std::vector<paddle::Tensor>& grads,
                          std::vector<paddle::Tensor>& velocities,  // NOLINT
                          const paddle::Tensor& lr, float mu, float l2, bool has_l2,
                          float rescale, bool nesterov) {
  PD_CHECK(params.size() == grads.size() && params.size() == velocities.size(),
           "pm_momentum_multi: params, grads and velocities differ in number");
  if (params.empty()) return;
  const Hyper h{mu, l2, has_l2, rescale, nesterov};
  DispatchParameterType(params[0].dtype(), "pm_momentum_multi", [&](auto type_tag) {
    RunMulti<decltype(type_tag)>(params, grads, velocities, lr, h);
  });
}

PD_BUILD_OP(pm_momentum_multi)
    .Inputs({paddle::Vec("Param"), paddle::Vec("Grad"), paddle::Vec("Velocity"),
             "LearningRate"})
    .Outputs({paddle::Vec("ParamOut"), paddle::Vec("VelocityOut")})
    .Attrs({"mu: float", "l2: float", "has_l2: bool", "rescale: float", "nesterov: bool"})
    .SetInplaceMap({{paddle::Vec("Param"), paddle::Vec("ParamOut")},
                    {paddle::Vec("Velocity"), paddle::Vec("VelocityOut")}})
    .SetKernelFn(PD_KERNEL(MomentumMultiInplace));
