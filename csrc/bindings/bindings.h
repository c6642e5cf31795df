// The pybind11 module `pyserver._core`: shared declarations of its binding files.
//
// GIL discipline (see DESIGN.md, "The C++ core"): the bindings hold the GIL only to read Python
// objects and build results; anything that may block (joining threads) runs with the GIL
// released. Core threads never take the GIL, except a Python engine's worker, once per batch.
#pragma once

#include <pybind11/pybind11.h>

#include "core/monitor.h"
#include "core/status.h"
#include "core/types.h"

namespace pyserver {
namespace bindings {

namespace py = pybind11;

// The one place a core Status becomes a Python exception (for setup errors: completions carry
// their status code to Python as a value instead). INVALID_ARGUMENT -> ValueError,
// UNSUPPORTED -> NotImplementedError, anything else -> RuntimeError. Does nothing for OK.
void ThrowIfError(const core::Status& status);

// A shape as a tuple of ints (module.cc).
py::tuple ShapeTuple(const core::Shape& shape);

void BindEngines(py::module_& m);
void BindCompletionQueue(py::module_& m);
void BindScheduler(py::module_& m);
void BindDevice(py::module_& m);
void BindOnnxRuntime(py::module_& m);
// MonitorTensor and MonitorOptions (called by BindScheduler), and the monitor's snapshot as a
// dict (monitor_bindings.cc; the layout is in pyserver/_core.pyi).
void BindMonitor(py::module_& m);
py::dict MonitorSnapshotDict(const core::MonitorSnapshot& snapshot);

}  // namespace bindings
}  // namespace pyserver
