// OrtLibrary: ONNX Runtime's C API, loaded at run time with dlopen.
//
// As with the CUDA driver (cuda_driver.h), nothing of ONNX Runtime is needed to build pyserver:
// the Python backend finds libonnxruntime.so.1.x next to the imported onnxruntime module and
// hands its path here. Load() dlopens it, reads OrtGetApiBase, checks the library's version and
// asks for the API version whose slots ort_api.h declares, and creates the process's OrtEnv
// (logging at WARNING, as onnxruntime's Python module does by default). Any failure is
// UNAVAILABLE saying which step failed, and the backend falls back to the Python engine.
//
// Every status-returning call goes through Check(), so a failure is a Status naming the call,
// ONNX Runtime's error code and its message ("CreateSession: NO_SUCHFILE: Load model from ...").
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/ort_api.h"
#include "core/status.h"

namespace pyserver {
namespace core {

class OrtLibrary {
 public:
  // The library at `path`, loaded once per path for the life of the process (later calls with
  // the same path return the same object; failures are not remembered). Thread-safe.
  static Status Load(const std::string& path, std::shared_ptr<OrtLibrary>* library);

  // Never dlcloses and never releases its OrtEnv: sessions and output values may be released
  // late (from Python's garbage collector), and at process exit ONNX Runtime's own static
  // objects may already be gone. Libraries live in a registry that is never destroyed.
  ~OrtLibrary() = default;
  OrtLibrary(const OrtLibrary&) = delete;
  OrtLibrary& operator=(const OrtLibrary&) = delete;

  const std::string& path() const { return path_; }
  const std::string& version() const { return version_; }  // "1.22.0", GetVersionString's
  uint32_t api_version() const { return ort::kOrtApiVersion; }  // the version asked for
  const ort::OrtApi& api() const { return *api_; }
  ort::OrtEnv* env() const { return env_; }

  // OK for nullptr (the API's success); otherwise releases `status` and returns `code` with
  // "<call>: <ONNX Runtime error code>: <message>".
  Status Check(ort::OrtStatus* status, const char* call,
               StatusCode code = StatusCode::kInternal) const;

 private:
  OrtLibrary() = default;

  std::string path_;
  std::string version_;
  const ort::OrtApi* api_ = nullptr;
  ort::OrtEnv* env_ = nullptr;
};

// "NO_SUCHFILE" for ONNX Runtime's error code 3; "error 42" for codes newer than ort_api.h.
std::string OrtErrorCodeName(int code);

}  // namespace core
}  // namespace pyserver
