// paddle_momentum's gradient table: the data pointers of many parameters' gradients in one call,
// and the check that nothing a flat bucket was built from has changed.
//
// A flat bucket's fused update needs, every step, the gradient of each of its members. Asking
// Paddle for them (core.eager.get_all_grads), passing them to the custom op as a tensor list
// and checking from Python that every member still lives in its buffer costs about 1 us per
// member with cold caches: 2.3 ms for 2000 members, five times the update itself. This function
// does the same in one pass over the members' Python objects, with the same checks, and writes
// the gradients' data pointers into an int64 table that the kernel op (pm_momentum_table*)
// takes instead of the list. In the same pass it checks each member's memory (its dtype, size,
// layout and place, and that its state tensors are the optimizer's and still live where the
// bucket put them) and the attribute objects its update settings were derived from
// (``optimize_attr['learning_rate']``, ``regularizer``, ``main_grad``, ``need_clip``; see
// paddle_momentum/_settings.py), by identity against a snapshot list that holds references to
// them (so no other object can take their addresses). A changed attribute is reported for
// every member it concerns at once (the status row), so the Python side derives the settings
// of those members only; a bucket is rebuilt only when memory changed.
//
// It reads Paddle's objects beyond the custom-operator API, each use checked:
//  * the Python tensor object's layout (paddle/utils/pybind.h, installed with Paddle):
//    pm_gradient_table_selfcheck compares it with Paddle's own CastPyArg2Tensor;
//  * egr::AutogradMeta::Grad(), exported by libpaddle but declared here (its header is not
//    installed): the Python side compares the table with get_all_grads once after loading;
//  * stop_gradient through Paddle's own property getter (no layout assumed);
//  * the attributes through the object's __dict__: the Python side checks once after loading
//    that a changed attribute is reported.
// The optimizer uses the table only when this file builds and its checks pass; otherwise it
// keeps the tensor-list path. The extension is compiled against the installed Paddle's headers
// and cached per Paddle version.

#include <Python.h>
#include <descrobject.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
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

// Result codes: >= 0 counts the members the call updates (in the call, with a gradient: not
// none, released, or stop_gradient set); -(kStride * i + code) reports member i's problem.
// (The numbers come from paddle_momentum/_layout.py, as -D flags.)
enum Problem {
  kNotTensor = PM_PROBLEM_NOT_TENSOR, kParam = PM_PROBLEM_PARAM, kMoved = PM_PROBLEM_MOVED,
  kGrad = PM_PROBLEM_GRAD, kTable = PM_PROBLEM_TABLE, kSettings = PM_PROBLEM_SETTINGS
};
constexpr int64_t kStride = PM_PROBLEM_STRIDE;

// Rows of the table (int64 [kRows, n]); the kernel reads the ones after kDtype.
enum Row {
  kAddress = PM_ROW_PARAM_ADDRESS, kNumel = PM_ROW_SIZE, kGradAddress = PM_ROW_GRAD_ADDRESS,
  kDtype = PM_ROW_DTYPE, kLrScale = PM_ROW_LR_SCALE, kFlags = PM_ROW_FLAGS, kL2 = PM_ROW_L2,
  kL1 = PM_ROW_L1,
  kVelocityAddress = PM_ROW_VELOCITY_ADDRESS, kMasterAddress = PM_ROW_MASTER_ADDRESS,
  kStatus = PM_ROW_STATUS, kRows = PM_TABLE_ROW_COUNT
};

// The attributes a member's settings are derived from, in the snapshot's order.
constexpr int kAttributes = 4;

// ``dict[key]`` (borrowed), or None where ``dict`` is null or lacks it.
inline PyObject* Entry(PyObject* dict, PyObject* key) {
  PyObject* value = dict != nullptr ? PyDict_GetItem(dict, key) : nullptr;
  return value != nullptr ? value : Py_None;
}

// The ``_coeff`` of ``regularizer`` (a Python object) into ``row`` as a double's bits, when it
// is a float; false otherwise.
bool TakeCoefficient(PyObject* regularizer, int64_t* row) {
  static PyObject* coeff_name = PyUnicode_InternFromString("_coeff");
  PyObject** dict_ptr = _PyObject_GetDictPtr(regularizer);
  PyObject* coeff = dict_ptr != nullptr ? Entry(*dict_ptr, coeff_name) : Py_None;
  if (!PyFloat_CheckExact(coeff)) return false;
  const double value = PyFloat_AS_DOUBLE(coeff);
  std::memcpy(row, &value, sizeof(value));
  return true;
}

// A member whose decay row is its regularizer attribute's coefficient (flags PM_FLAG_OWN_L2 or
// PM_FLAG_OWN_L1, set by the Python side where the attribute is exactly an L2Decay or
// L1Decay): the coefficient of ``regularizer`` (the attribute now) goes into its row when it
// is an object of the snapshot's type with a float coefficient (the same one changed in
// place, or a new one: a per-layer decay schedule), and the snapshot takes it; true then, false
// when the Python side must derive the member's settings again.
bool TakeRegularizer(PyObject* regularizer, PyObject* snapshot, Py_ssize_t at, int64_t flags,
                     int64_t* l2, int64_t* l1) {
  PyObject* was = PyList_GET_ITEM(snapshot, at);
  if (regularizer == Py_None || Py_TYPE(regularizer) != Py_TYPE(was) ||
      !TakeCoefficient(regularizer, (flags & PM_FLAG_OWN_L2) != 0 ? l2 : l1)) {
    return false;
  }
  if (regularizer != was) {
    Py_INCREF(regularizer);
    PyList_SetItem(snapshot, at, regularizer);  // (drops the old object)
  }
  return true;
}

// Marks (status row: PM_STATUS_ATTRIBUTES) every member whose attribute objects are not the
// ones in ``snapshot`` (kAttributes per member: optimize_attr['learning_rate'], regularizer,
// main_grad, need_clip; None where absent) and returns the first one, or -1. In two passes over
// all members, so that their cache misses overlap: the members' __dict__ entries, then the
// learning rates in their optimize_attr dicts.
//
// A learning-rate scale replaced by another plain number (a float, or an int other than a bool:
// a per-step schedule) is not a change: its value goes into the member's row of ``lr_scales``
// (the 64 bits of the double, which the kernel reads) and the snapshot takes the new object.
// The built-in takes any such number as it is, so there is nothing to check.
Py_ssize_t MarkChangedAttributes(PyObject* params, PyObject* snapshot, int64_t* lr_scales,
                                 int64_t* status, const int64_t* flags, int64_t* l2,
                                 int64_t* l1) {
  static PyObject* optimize_attr = PyUnicode_InternFromString("optimize_attr");
  static PyObject* learning_rate = PyUnicode_InternFromString("learning_rate");
  static PyObject* regularizer = PyUnicode_InternFromString("regularizer");
  static PyObject* main_grad = PyUnicode_InternFromString("main_grad");
  static PyObject* need_clip = PyUnicode_InternFromString("need_clip");
  const Py_ssize_t n = PyList_GET_SIZE(params);
  std::vector<PyObject*> attrs(n);
  Py_ssize_t first = -1;
  auto mark = [&](Py_ssize_t i) {
    status[i] = PM_STATUS_ATTRIBUTES;
    if (first < 0 || i < first) first = i;
  };
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject** dict_ptr = _PyObject_GetDictPtr(PyList_GET_ITEM(params, i));
    PyObject* dict = dict_ptr != nullptr ? *dict_ptr : nullptr;
    attrs[i] = Entry(dict, optimize_attr);
    PyObject* const* was = &PyList_GET_ITEM(snapshot, kAttributes * i);
    PyObject* regularizer_now = Entry(dict, regularizer);
    const bool own_decay = (flags[i] & (PM_FLAG_OWN_L2 | PM_FLAG_OWN_L1)) != 0;
    const bool decay_taken = own_decay && TakeRegularizer(regularizer_now, snapshot,
                                                          kAttributes * i + 1, flags[i],
                                                          &l2[i], &l1[i]);
    if ((!decay_taken && (own_decay || regularizer_now != was[1])) ||
        Entry(dict, main_grad) != was[2] ||
        Entry(dict, need_clip) != was[3] ||
        (attrs[i] != Py_None && !PyDict_CheckExact(attrs[i]))) {  // not a plain dict:
      mark(i);                                                    // let Python decide
      attrs[i] = nullptr;
    }
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (attrs[i] == nullptr) continue;
    PyObject* lr_scale = PyDict_CheckExact(attrs[i]) ? Entry(attrs[i], learning_rate) : Py_None;
    if (lr_scale == PyList_GET_ITEM(snapshot, kAttributes * i)) continue;
    double value;
    if (PyFloat_CheckExact(lr_scale)) {
      value = PyFloat_AS_DOUBLE(lr_scale);
    } else if (PyLong_CheckExact(lr_scale)) {
      value = PyLong_AsDouble(lr_scale);
      if (value == -1.0 && PyErr_Occurred()) {  // too large: let Python say so
        PyErr_Clear();
        mark(i);
        continue;
      }
    } else {
      mark(i);
      continue;
    }
    std::memcpy(&lr_scales[i], &value, sizeof(value));
    Py_INCREF(lr_scale);
    PyList_SetItem(snapshot, kAttributes * i, lr_scale);  // (drops the old object)
  }
  return first;
}

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

// The element data's address on the CPU; 0 without storage, -1 elsewhere. Public accessors
// only (DenseTensor::Holder() is not public before Paddle 3.3); data() checks the storage
// against the meta and may throw, which must not cross into Python.
int64_t CpuAddress(const phi::DenseTensor* dense) {
  if (!dense->initialized()) return 0;
  try {
    if (dense->place().GetType() != phi::AllocationType::CPU) return -1;
    return reinterpret_cast<int64_t>(dense->data());
  } catch (...) {
    return -1;
  }
}

// A gradient that is there but not a dense tensor (a sparse one).
const phi::DenseTensor* const kUnfit = reinterpret_cast<const phi::DenseTensor*>(1);

struct Member {
  const phi::DenseTensor* param;
  const egr::AutogradMeta* meta;
  bool frozen;
};

// The first member whose state in one of ``states``' (dict, keys, objects) triples is not its
// object (a velocity replaced in the optimizer's dict, say) or does not live where
// ``addresses[t]`` says (its storage replaced in place: _share_buffer_to, set_value of another
// size), -1 when none is, -2 for a malformed argument. The triples are the velocities' and
// then, where there are master weights, the master weights'.
Py_ssize_t FirstReplacedState(PyObject* states, Py_ssize_t n, const int64_t* const* addresses) {
  if (!PyList_CheckExact(states) || PyList_GET_SIZE(states) % 3 != 0 ||
      PyList_GET_SIZE(states) > 6) {
    return -2;
  }
  for (Py_ssize_t t = 0; t < PyList_GET_SIZE(states); t += 3) {
    PyObject* dict = PyList_GET_ITEM(states, t);
    PyObject* keys = PyList_GET_ITEM(states, t + 1);
    PyObject* objects = PyList_GET_ITEM(states, t + 2);
    if (!PyDict_Check(dict) || !PyList_CheckExact(keys) || !PyList_CheckExact(objects) ||
        PyList_GET_SIZE(keys) != n || PyList_GET_SIZE(objects) != n) {
      return -2;
    }
    const int64_t* expected = addresses[t / 3];
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* object = PyList_GET_ITEM(objects, i);
      if (PyDict_GetItem(dict, PyList_GET_ITEM(keys, i)) != object) return i;
    }
    for (Py_ssize_t i = 0; i < n; ++i) {
      const phi::DenseTensor* dense = DenseOf(TensorOf(PyList_GET_ITEM(objects, i)));
      if (dense == nullptr || CpuAddress(dense) != expected[i]) return i;
    }
  }
  return -1;
}

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

// The dtype code pm_gradient_table expects in the table's dtype row for ``tensor``; -1 when
// it is not a dense tensor.
extern "C" int64_t pm_tensor_dtype(PyObject* tensor) {
  if (!paddle::pybind::PyCheckTensor(tensor)) return -1;
  const phi::DenseTensor* dense = DenseOf(TensorOf(tensor));
  return dense == nullptr ? -1 : static_cast<int64_t>(dense->meta().dtype);
}

// params: a list of tensors. table: int64 CPU tensor [kRows, len(params)] (rows: _layout.py):
// the address each member's data must have (its place in the bucket), its number of elements
// and its dtype code (pm_tensor_dtype), its flags (only PM_FLAG_IN_CALL is read here) and its
// state's addresses; the gradient-address row is written: each member's gradient address (0
// when the call does not update it: not in the call, or without a usable gradient). A gradient
// must be a dense contiguous CPU tensor of its parameter's dtype and size (else the status row
// marks every member whose gradient is not, and the result reports the first). stop_gradient:
// the property descriptor of paddle.Tensor, whose getter decides "frozen" as Paddle does.
// snapshot: a list of kAttributes objects per member (see MarkChangedAttributes), or None to
// skip that check. states: None, or a list of (dict, keys, objects) triples (see
// FirstReplacedState), else -(kStride * i + kMoved).
// Members are walked in passes so that the cache misses of different members overlap.
extern "C" int64_t pm_gradient_table(PyObject* params, PyObject* table_object,
                                     PyObject* stop_gradient, PyObject* snapshot,
                                     PyObject* states) {
  if (!PyList_CheckExact(params) || !paddle::pybind::PyCheckTensor(table_object) ||
      !PyObject_TypeCheck(stop_gradient, &PyGetSetDescr_Type)) {
    return -kTable;
  }
  const paddle::Tensor& table = TensorOf(table_object);
  const Py_ssize_t n = PyList_GET_SIZE(params);
  if (!table.initialized() || !table.is_dense_tensor() || !table.is_cpu() ||
      table.dtype() != paddle::DataType::INT64 || table.numel() != kRows * n ||
      (snapshot != Py_None &&
       (!PyList_CheckExact(snapshot) || PyList_GET_SIZE(snapshot) != kAttributes * n))) {
    return -kTable;
  }
  int64_t* rows = const_cast<int64_t*>(table.data<int64_t>());
  const int64_t* expected = rows + kAddress * n;
  const int64_t* numel = rows + kNumel * n;
  int64_t* grad_address = rows + kGradAddress * n;
  const int64_t* dtype = rows + kDtype * n;
  const int64_t* flags = rows + kFlags * n;
  int64_t* status = rows + kStatus * n;
  PyGetSetDef* getter = reinterpret_cast<PyGetSetDescrObject*>(stop_gradient)->d_getset;
  PyTypeObject* tensor_type = PyDescr_TYPE(stop_gradient);
  std::fill(status, status + n, 0);

  std::vector<Member> members(n);
  PyTypeObject* checked_type = nullptr;  // a type seen to be a tensor with Paddle's getter
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* object = PyList_GET_ITEM(params, i);
    if (Py_TYPE(object) != checked_type) {
      if (!paddle::pybind::PyCheckTensor(object) || !PyObject_TypeCheck(object, tensor_type)) {
        return -(kStride * i + kNotTensor);
      }
      PyObject* found = PyObject_GetAttrString(reinterpret_cast<PyObject*>(Py_TYPE(object)),
                                               "stop_gradient");
      const bool same_getter = found == stop_gradient;
      Py_XDECREF(found);
      if (!same_getter) {
        PyErr_Clear();
        return -(kStride * i + kNotTensor);
      }
      checked_type = Py_TYPE(object);
    }
    const paddle::Tensor& param = TensorOf(object);
    members[i].param = DenseOf(param);
    members[i].meta = static_cast<const egr::AutogradMeta*>(param.get_autograd_meta());
    members[i].frozen = true;
    if ((flags[i] & PM_FLAG_IN_CALL) == 0) continue;  // (its gradient is not read)
    PyObject* frozen = getter->get(object, getter->closure);
    if (frozen == nullptr) {
      PyErr_Clear();
      return -(kStride * i + kParam);
    }
    members[i].frozen = frozen == Py_True;
    Py_DECREF(frozen);
  }
  if (states != Py_None) {
    const int64_t* addresses[2] = {rows + kVelocityAddress * n, rows + kMasterAddress * n};
    const Py_ssize_t replaced = FirstReplacedState(states, n, addresses);
    if (replaced == -2) return -kTable;
    if (replaced >= 0) return -(kStride * replaced + kMoved);
  }
  std::vector<const phi::DenseTensor*> grads(n, nullptr);
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (!Fits(members[i].param, numel[i], static_cast<phi::DataType>(dtype[i]))) {
      return -(kStride * i + kParam);
    }
    if (members[i].meta != nullptr && !members[i].frozen) {
      const paddle::Tensor& grad = members[i].meta->Grad();
      grads[i] = DenseOf(grad);
      if (grad.impl() != nullptr && grads[i] == nullptr) grads[i] = kUnfit;  // sparse
    }
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (CpuAddress(members[i].param) != expected[i]) return -(kStride * i + kMoved);
  }
  if (snapshot != Py_None) {
    const Py_ssize_t changed = MarkChangedAttributes(params, snapshot, rows + kLrScale * n,
                                                     status, flags, rows + kL2 * n,
                                                     rows + kL1 * n);
    if (changed >= 0) return -(kStride * changed + kSettings);
  }
  int64_t updated = 0;
  Py_ssize_t first_unfit = -1;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const phi::DenseTensor* grad = grads[i];
    grad_address[i] = 0;
    if (grad == nullptr || (grad != kUnfit && !grad->initialized())) continue;
    const int64_t address = grad == kUnfit || !Fits(grad, numel[i], members[i].param->meta().dtype)
                                ? -1 : CpuAddress(grad);
    if (address <= 0) {
      status[i] = PM_STATUS_GRADIENT;
      if (first_unfit < 0) first_unfit = i;
      continue;
    }
    grad_address[i] = address;
    ++updated;
  }
  if (first_unfit >= 0) return -(kStride * first_unfit + kGrad);
  return updated;
}
