// PythonEngine: an engine written in Python (an object with execute(inputs) -> outputs), run on
// an instance's worker thread with the GIL taken once per batch.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "core/engine.h"

namespace pyserver {
namespace bindings {

namespace py = pybind11;

// A worker thread that calls into Python keeps one Python thread state between batches.
// Without one, every GIL acquisition on a thread Python did not start would create and destroy
// a thread state (slow, and it would drop threading.local data between batches).
// KeepPythonThreadState: must be called without the GIL; creates it on first use.
// ReleasePythonThreadState: at worker exit, gives it back (takes and drops the GIL).
void KeepPythonThreadState();
void ReleasePythonThreadState();

// "ValueError: boom" for a Python exception. GIL held.
std::string DescribePythonError(const py::error_already_set& error);

class PythonEngine final : public core::Engine {
 public:
  // GIL held. `engine` must have a callable `execute`.
  explicit PythonEngine(py::object engine);
  // Takes the GIL to drop its references (it may be destroyed with the GIL released).
  ~PythonEngine() override;

  // Per batch: takes the GIL once; builds the input arrays (zero copy for fixed-size types),
  // calls engine.execute, and checks and keeps its outputs. A Python exception becomes INTERNAL
  // with the exception's text; the worker thread carries on.
  core::Status Execute(const core::BatchInputs& inputs, core::BatchOutputs* outputs) override;

  // Gives back the Python thread state Execute kept for this worker thread.
  void OnWorkerExit() override;

 private:
  py::object engine_;
  py::object ascontiguousarray_;  // numpy.ascontiguousarray
  py::object asarray_;            // numpy.asarray
};

}  // namespace bindings
}  // namespace pyserver
