#include "bindings/python_engine.h"

#include <pybind11/numpy.h>

#include <exception>
#include <string>
#include <utility>

#include "bindings/numpy_convert.h"

namespace pyserver {
namespace bindings {
namespace {

// Whether this worker thread keeps a Python thread state between batches.
thread_local bool t_keeps_thread_state = false;

}  // namespace

void KeepPythonThreadState() {
  if (t_keeps_thread_state) return;
  PyGILState_Ensure();  // creates the thread state (counter 1) and takes the GIL
  PyEval_SaveThread();  // releases the GIL, keeps the thread state
  t_keeps_thread_state = true;
}

std::string DescribePythonError(const py::error_already_set& error) {
  try {
    std::string type = py::str(error.type().attr("__name__"));
    std::string text = py::str(error.value());
    return text.empty() ? type : type + ": " + text;
  } catch (const std::exception&) {
    return error.what();
  }
}

void ReleasePythonThreadState() {
  if (!t_keeps_thread_state) return;
  t_keeps_thread_state = false;
  if (!Py_IsInitialized()) return;
  PyEval_RestoreThread(PyGILState_GetThisThreadState());  // takes the GIL
  PyGILState_Release(PyGILState_UNLOCKED);  // counter 0: clears, deletes, releases the GIL
}

PythonEngine::PythonEngine(py::object engine) : engine_(std::move(engine)) {
  py::module_ numpy = py::module_::import("numpy");
  ascontiguousarray_ = numpy.attr("ascontiguousarray");
  asarray_ = numpy.attr("asarray");
}

PythonEngine::~PythonEngine() {
  if (!Py_IsInitialized()) {  // at process exit, after finalization: leak rather than crash
    engine_.release();
    ascontiguousarray_.release();
    asarray_.release();
    return;
  }
  py::gil_scoped_acquire gil;
  engine_ = py::object();
  ascontiguousarray_ = py::object();
  asarray_ = py::object();
}

void PythonEngine::OnWorkerExit() { ReleasePythonThreadState(); }

core::Status PythonEngine::Execute(const core::BatchInputs& inputs, core::BatchOutputs* outputs) {
  KeepPythonThreadState();
  // The one GIL acquisition of this batch: building the arrays, calling execute and reading
  // its results all need it. Never per request.
  py::gil_scoped_acquire gil;
  try {
    py::list arrays(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      arrays[i] = InputToNumpy(inputs[i]);
    }
    py::object result = engine_.attr("execute")(arrays);

    if (!py::isinstance<py::sequence>(result) || py::isinstance<py::str>(result)) {
      return core::Status::Internal("engine.execute returned " +
                                    std::string(Py_TYPE(result.ptr())->tp_name) +
                                    "; expected a sequence of arrays, one per output");
    }
    py::sequence results = py::reinterpret_borrow<py::sequence>(result);
    if (results.size() != outputs->size()) {
      return core::Status::Internal("engine.execute returned " + std::to_string(results.size()) +
                                    " outputs; the model config has " +
                                    std::to_string(outputs->size()));
    }
    for (size_t j = 0; j < outputs->size(); ++j) {
      core::Status status =
          OutputFromNumpy(results[j], ascontiguousarray_, asarray_, &(*outputs)[j]);
      if (!status.ok()) return status;
    }
    return core::Status::Ok();
  } catch (py::error_already_set& error) {
    // Destroyed at the end of this block, GIL still held.
    return core::Status::Internal("engine.execute raised " + DescribePythonError(error));
  } catch (const std::exception& error) {
    return core::Status::Internal(std::string("engine.execute failed: ") + error.what());
  }
}

}  // namespace bindings
}  // namespace pyserver
