// paddle_momentum's gradient table: the data pointers of many parameters' gradients in one call.
//
// A flat bucket's fused update needs, every step, the gradient of each of its members. Asking
// Paddle for them (core.eager.get_all_grads), passing them to the custom op as a tensor list
// and checking from Python that every member still lives in its buffer costs about 1 us per
// member with cold caches: 2.3 ms for 2000 members, five times the update itself. This function
// does the same in one pass over the members' Python objects, with the same checks, and writes
// the gradients' data pointers into an int64 table that the kernel op (pm_momentum_table*)
// takes instead of the list.
//
// It reads Paddle's objects beyond the custom-operator API, each use checked:
//  * the Python tensor object's layout (paddle/utils/pybind.h, installed with Paddle):
//    pm_gradient_table_selfcheck compares it with Paddle's own CastPyArg2Tensor;
//  * egr::AutogradMeta::Grad(), exported by libpaddle but declared here (its header is not
//    installed): the Python side compares the table with get_all_grads once after loading;
//  * stop_gradient through Paddle's own property getter (no layout assumed).
// The optimizer uses the table only when this file builds and both checks pass; otherwise it
// keeps the tensor-list path. The extension is compiled against the installed Paddle's headers
// and cached per Paddle version.

#include <Python.h>
#include <descrobject.h>

#include <cstdint>
#include <vector>

#include "paddle/extension.h"
#include "paddle/phi/core/dense_tensor.h"

namespace egr {
class AutogradMeta : public paddle::AbstractAutogradMeta {
 public:
  const paddle::Tensor& Grad() const;  // defined in libpaddle
};
}  // namespace egr

namespace {

// Result codes: >= 0 counts the members without a usable gradient (none, released, or
// stop_gradient set); -(8 * i + code) reports member i's problem.
enum Problem { kNotTensor = 1, kParam = 2, kMoved = 3, kGrad = 4, kTable = 5 };

const paddle::Tensor& TensorOf(PyObject* object) {
  return reinterpret_cast<paddle::pybind::TensorObject*>(object)->tensor;
}

// ``tensor``'s dense tensor, or nullptr when it has none (not initialized, sparse, ...).
const phi::DenseTensor* DenseOf(const paddle::Tensor& tensor) {
  const phi::TensorBase* base = tensor.impl().get();
  return base != nullptr && phi::DenseTensor::classof(base)
             ? static_cast<const phi::DenseTensor*>(base)
             : nullptr;
}

// Contiguous, of ``numel`` elements (and of ``dtype`` unless UNDEFINED).
bool Fits(const phi::DenseTensor* dense, int64_t numel, phi::DataType dtype) {
  if (dense == nullptr) return false;
  const phi::DenseTensorMeta& meta = dense->meta();
  if (dtype != phi::DataType::UNDEFINED && meta.dtype != dtype) return false;
  if (meta.dims.size() < 0) return false;
  int64_t elements = 1;
  for (int k = 0; k < meta.dims.size(); ++k) elements *= meta.dims[k];
  if (elements != numel) return false;
  const bool plain_vector = meta.dims.size() <= 1 &&
                            (meta.strides.size() == 0 || meta.strides[0] == 1);
  return plain_vector || meta.is_contiguous();
}

// The element data's address on the CPU; 0 without storage, -1 elsewhere.
int64_t CpuAddress(const phi::DenseTensor* dense) {
  const auto& holder = dense->Holder();
  if (!holder || holder->ptr() == nullptr) return 0;
  if (holder->place().GetType() != phi::AllocationType::CPU) return -1;
  return reinterpret_cast<int64_t>(static_cast<char*>(holder->ptr()) + dense->meta().offset);
}

struct Member {
  const phi::DenseTensor* param;
  const egr::AutogradMeta* meta;
  bool frozen;
};

}  // namespace

// The Python tensor object's layout agrees with Paddle's own accessor: 1, else <= 0.
extern "C" int64_t pm_gradient_table_selfcheck(PyObject* tensor) {
  if (!paddle::pybind::PyCheckTensor(tensor)) return -1;
  try {
    return &paddle::pybind::CastPyArg2Tensor(tensor, 0) == &TensorOf(tensor) ? 1 : 0;
  } catch (...) {
    return -2;
  }
}

// params: a list of tensors. table: int64 CPU tensor [3, len(params)]: row 0 the address each
// member's data must have (its place in the bucket), row 1 its number of elements; row 2 is
// written: each member's gradient address (0 when it has no usable gradient). A gradient must
// be a dense contiguous CPU tensor of its parameter's dtype and size. stop_gradient: the
// property descriptor of paddle.Tensor, whose getter decides "frozen" as Paddle does.
// Members are walked in three passes so that the cache misses of different members overlap.
extern "C" int64_t pm_gradient_table(PyObject* params, PyObject* table_object,
                                     PyObject* stop_gradient) {
  if (!PyList_CheckExact(params) || !paddle::pybind::PyCheckTensor(table_object) ||
      !PyObject_TypeCheck(stop_gradient, &PyGetSetDescr_Type)) {
    return -kTable;
  }
  const paddle::Tensor& table = TensorOf(table_object);
  const Py_ssize_t n = PyList_GET_SIZE(params);
  if (!table.initialized() || !table.is_dense_tensor() || !table.is_cpu() ||
      table.dtype() != paddle::DataType::INT64 || table.numel() != 3 * n) {
    return -kTable;
  }
  int64_t* rows = const_cast<int64_t*>(table.data<int64_t>());
  const int64_t* expected = rows;
  const int64_t* numel = rows + n;
  int64_t* grad_address = rows + 2 * n;
  PyGetSetDef* getter = reinterpret_cast<PyGetSetDescrObject*>(stop_gradient)->d_getset;
  PyTypeObject* tensor_type = PyDescr_TYPE(stop_gradient);

  std::vector<Member> members(n);
  PyTypeObject* checked_type = nullptr;  // a type seen to be a tensor with Paddle's getter
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* object = PyList_GET_ITEM(params, i);
    if (Py_TYPE(object) != checked_type) {
      if (!paddle::pybind::PyCheckTensor(object) || !PyObject_TypeCheck(object, tensor_type)) {
        return -(8 * i + kNotTensor);
      }
      PyObject* found = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(object)),
                                               "stop_gradient");
      const bool same_getter = found == stop_gradient;
      Py_XDECREF(found);
      if (!same_getter) {
        PyErr_Clear();
        return -(8 * i + kNotTensor);
      }
      checked_type = Py_TYPE(object);
    }
    const paddle::Tensor& param = TensorOf(object);
    members[i].param = DenseOf(param);
    members[i].meta = static_cast<const egr::AutogradMeta*>(param.get_autograd_meta());
    PyObject* frozen = getter->get(object, getter->closure);
    if (frozen == nullptr) {
      PyErr_Clear();
      return -(8 * i + kParam);
    }
    members[i].frozen = frozen == Py_True;
    Py_DECREF(frozen);
  }
  std::vector<const phi::DenseTensor*> grads(n, nullptr);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!Fits(members[i].param, numel[i], phi::DataType::UNDEFINED)) return -(8 * i + kParam);
    if (members[i].meta != nullptr && !members[i].frozen) {
      const paddle::Tensor& grad = members[i].meta->Grad();
      grads[i] = DenseOf(grad);
      if (grad.impl() != nullptr && grads[i] == nullptr) return -(8 * i + kGrad);  // sparse
    }
  }
  int64_t without_gradient = 0;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (CpuAddress(members[i].param) != expected[i]) return -(8 * i + kMoved);
    const phi::DenseTensor* grad = grads[i];
    if (grad == nullptr || !grad->initialized()) {
      grad_address[i] = 0;
      ++without_gradient;
      continue;
    }
    if (!Fits(grad, numel[i], members[i].param->meta().dtype)) return -(8 * i + kGrad);
    const int64_t address = CpuAddress(grad);
    if (address <= 0) return -(8 * i + kGrad);
    grad_address[i] = address;
  }
  return without_gradient;
}
