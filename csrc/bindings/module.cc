// PYBIND11_MODULE(_core): the compiled core's Python face. The contract is pyserver/_core.pyi.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"

namespace pyserver {
namespace bindings {

void ThrowIfError(const core::Status& status) {
  switch (status.code()) {
    case core::StatusCode::kOk:
      return;
    case core::StatusCode::kInvalidArgument:
      throw py::value_error(status.message());
    case core::StatusCode::kUnsupported:
      PyErr_SetString(PyExc_NotImplementedError, status.message().c_str());
      throw py::error_already_set();
    default:
      throw std::runtime_error(status.message());
  }
}

py::tuple ShapeTuple(const core::Shape& shape) {
  py::tuple tuple(shape.size());
  for (size_t i = 0; i < shape.size(); ++i) {
    PyObject* dim = PyLong_FromLongLong(shape[i]);
    if (dim == nullptr) throw py::error_already_set();
    PyTuple_SET_ITEM(tuple.ptr(), static_cast<py::ssize_t>(i), dim);
  }
  return tuple;
}

}  // namespace bindings
}  // namespace pyserver

PYBIND11_MODULE(_core, m) {
  namespace py = pybind11;
  m.doc() = "pyserver's compiled core: request queue, dynamic batcher, instances, completions.";
  // Import numpy once, here, so that a missing or broken numpy fails the import clearly rather
  // than the first batch on a worker thread.
  py::module_::import("numpy");
  pyserver::bindings::BindEngines(m);
  pyserver::bindings::BindCompletionQueue(m);
  pyserver::bindings::BindScheduler(m);
  pyserver::bindings::BindDevice(m);
  pyserver::bindings::BindOnnxRuntime(m);
  // The status codes of completions, from csrc/core/status.h: the one table of their numbers
  // (pyserver.completions makes its StatusCode enum from it).
  py::dict codes;
  codes["OK"] = static_cast<int>(pyserver::core::StatusCode::kOk);
  codes["INVALID_ARGUMENT"] = static_cast<int>(pyserver::core::StatusCode::kInvalidArgument);
  codes["NOT_FOUND"] = static_cast<int>(pyserver::core::StatusCode::kNotFound);
  codes["UNAVAILABLE"] = static_cast<int>(pyserver::core::StatusCode::kUnavailable);
  codes["INTERNAL"] = static_cast<int>(pyserver::core::StatusCode::kInternal);
  codes["DEADLINE_EXCEEDED"] = static_cast<int>(pyserver::core::StatusCode::kDeadlineExceeded);
  codes["CANCELLED"] = static_cast<int>(pyserver::core::StatusCode::kCancelled);
  codes["UNSUPPORTED"] = static_cast<int>(pyserver::core::StatusCode::kUnsupported);
  codes["RESOURCE_EXHAUSTED"] = static_cast<int>(pyserver::core::StatusCode::kResourceExhausted);
  m.attr("STATUS_CODES") = codes;
}
