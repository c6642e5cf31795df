// Engine handles: the C++ identity engine and engines written in Python.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "bindings/bindings.h"
#include "bindings/python_engine.h"
#include "core/identity_engine.h"

namespace pyserver {
namespace bindings {

void BindEngines(py::module_& m) {
  // Opaque: Python only passes engines to Scheduler, one per instance.
  py::class_<core::Engine, std::shared_ptr<core::Engine>>(
      m, "Engine", "An engine handle the scheduler can run: make one per instance.");

  py::class_<core::IdentityEngine, core::Engine, std::shared_ptr<core::IdentityEngine>>(
      m, "IdentityEngine", "The C++ identity engine; counts what it runs.")
      .def_property_readonly("executions", &core::IdentityEngine::executions,
                             "Batches executed.")
      .def_property_readonly("rows", &core::IdentityEngine::rows,
                             "Rows executed (the first input's first dimension, summed).");

  m.def(
      "identity_engine",
      [](int64_t execute_delay_us) -> std::shared_ptr<core::Engine> {
        if (execute_delay_us < 0) throw py::value_error("execute_delay_us must be >= 0");
        core::IdentityEngineOptions options;
        options.execute_delay_us = execute_delay_us;
        return std::make_shared<core::IdentityEngine>(options);
      },
      py::arg("execute_delay_us") = 0,
      "C++ identity: output i is input i (same bytes, zero copy); sleeps execute_delay_us per "
      "batch.");

  m.def(
      "python_engine",
      [](py::object engine) -> std::shared_ptr<core::Engine> {
        if (!py::hasattr(engine, "execute") || !PyCallable_Check(engine.attr("execute").ptr())) {
          throw py::type_error("python_engine() needs an object with a callable execute(inputs)");
        }
        return std::make_shared<PythonEngine>(std::move(engine));
      },
      py::arg("engine"),
      "An engine written in Python: engine.execute(list of arrays) -> arrays, called once per "
      "batch on the instance's worker thread with the GIL held.");
}

}  // namespace bindings
}  // namespace pyserver
