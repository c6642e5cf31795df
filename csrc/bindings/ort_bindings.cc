// The native ONNX Runtime engine's Python face (pyserver/_core.pyi, "ONNX Runtime"): loading
// the library, sessions (what a model declares) and engines (one per instance).
#include <pybind11/stl.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "core/ort_engine.h"
#include "core/ort_library.h"

namespace pyserver {
namespace bindings {
namespace {

// A session as Python holds it until an engine takes it: one session runs on one instance.
struct SessionHandle {
  std::shared_ptr<core::OrtModelSession> session;
  bool taken = false;
};

py::list TensorInfos(const std::vector<core::OrtTensorInfo>& tensors) {
  py::list out;
  for (const core::OrtTensorInfo& info : tensors) {
    out.append(py::make_tuple(info.name, info.type, ShapeTuple(info.dims)));
  }
  return out;
}

}  // namespace

void BindOnnxRuntime(py::module_& m) {
  m.def(
      "onnxruntime_library",
      [](const std::string& path) {
        std::shared_ptr<core::OrtLibrary> library;
        core::Status status;
        {
          py::gil_scoped_release release;  // dlopen of a 30 MB library and CreateEnv
          status = core::OrtLibrary::Load(path, &library);
        }
        py::dict out;
        out["available"] = status.ok();
        out["error"] = status.message();
        out["library"] = path;
        out["version"] = library != nullptr ? library->version() : std::string();
        out["api_version"] = library != nullptr ? library->api_version() : 0u;
        return out;
      },
      py::arg("path"),
      "Load ONNX Runtime's C API from `path` (once per path); never raises.");

  py::class_<core::OrtSessionConfig>(m, "OnnxRuntimeSessionOptions",
                                     "How to make a session; -1 keeps ONNX Runtime's default.")
      .def(py::init<>())
      .def_readwrite("model_path", &core::OrtSessionConfig::model_path)
      .def_readwrite("intra_op_num_threads", &core::OrtSessionConfig::intra_op_num_threads)
      .def_readwrite("inter_op_num_threads", &core::OrtSessionConfig::inter_op_num_threads)
      .def_readwrite("graph_optimization_level",
                     &core::OrtSessionConfig::graph_optimization_level)
      .def_readwrite("execution_mode", &core::OrtSessionConfig::execution_mode);

  py::class_<SessionHandle>(m, "OnnxRuntimeSession",
                            "An ONNX Runtime session made by the core, until an engine takes it.")
      .def_property_readonly("inputs", [](const SessionHandle& h) {
        return TensorInfos(h.session->inputs());
      })
      .def_property_readonly("outputs", [](const SessionHandle& h) {
        return TensorInfos(h.session->outputs());
      })
      .def_property_readonly("version", [](const SessionHandle& h) {
        return h.session->library().version();
      });

  m.def(
      "onnxruntime_session",
      [](const std::string& library_path, const core::OrtSessionConfig& config) {
        std::unique_ptr<core::OrtModelSession> session;
        core::Status status;
        {
          // Reading and optimizing a model can take seconds: the event loop keeps serving
          // the models already loaded meanwhile.
          py::gil_scoped_release release;
          std::shared_ptr<core::OrtLibrary> library;
          status = core::OrtLibrary::Load(library_path, &library);
          if (status.ok()) status = core::OrtModelSession::Create(library, config, &session);
        }
        ThrowIfError(status);
        SessionHandle handle;
        handle.session = std::move(session);
        return handle;
      },
      py::arg("library"), py::arg("options"),
      "A session over options.model_path. ValueError for options out of range, RuntimeError "
      "naming the ONNX Runtime call that failed otherwise.");

  py::class_<core::OrtEngine, core::Engine, std::shared_ptr<core::OrtEngine>>(
      m, "OnnxRuntimeEngine", "ONNX Runtime run by the core, with no GIL.")
      .def_property_readonly("executions", &core::OrtEngine::executions, "Batches executed.")
      .def_property_readonly("preallocated_outputs", &core::OrtEngine::preallocated_outputs,
                             "Outputs ONNX Runtime wrote into buffers the engine allocated.")
      .def_property_readonly("runtime_allocated_outputs",
                             &core::OrtEngine::runtime_allocated_outputs,
                             "Outputs ONNX Runtime allocated and the engine handed on.")
      .def_property_readonly("version", [](const core::OrtEngine& e) {
        return e.session().library().version();
      });

  m.def(
      "onnxruntime_engine",
      [](SessionHandle& handle, std::vector<std::string> input_names,
         std::vector<std::string> output_names, bool batching, bool preallocate_outputs) {
        if (handle.taken) {
          throw py::value_error("this OnnxRuntimeSession already runs in an engine");
        }
        core::OrtEngineOptions options;
        options.input_names = std::move(input_names);
        options.output_names = std::move(output_names);
        options.batching = batching;
        options.preallocate_outputs = preallocate_outputs;
        std::shared_ptr<core::OrtEngine> engine;
        ThrowIfError(core::OrtEngine::Create(handle.session, std::move(options), &engine));
        handle.taken = true;
        return engine;
      },
      py::arg("session"), py::arg("input_names"), py::arg("output_names"), py::arg("batching"),
      py::arg("preallocate_outputs") = true,
      "An engine running `session` (which it takes: one session per instance).");
}

}  // namespace bindings
}  // namespace pyserver
