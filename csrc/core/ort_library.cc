#include "core/ort_library.h"

#include <dlfcn.h>

#include <cstdio>
#include <map>
#include <mutex>
#include <utility>

namespace pyserver {
namespace core {
namespace {

std::mutex g_registry_mu;  // guards g_registry
// Never destroyed (see ~OrtLibrary): a leaked map, not a static object with a destructor.
auto* const g_registry = new std::map<std::string, std::shared_ptr<OrtLibrary>>();

// "1.22.0" -> 1 and 22; false when the string does not start with two numbers.
bool ParseVersion(const char* text, int* major, int* minor) {
  return text != nullptr && std::sscanf(text, "%d.%d", major, minor) == 2;
}

}  // namespace

std::string OrtErrorCodeName(int code) {
  static const char* const kNames[] = {
      "OK",           "FAIL",          "INVALID_ARGUMENT",  "NO_SUCHFILE",
      "NO_MODEL",     "ENGINE_ERROR",  "RUNTIME_EXCEPTION", "INVALID_PROTOBUF",
      "MODEL_LOADED", "NOT_IMPLEMENTED", "INVALID_GRAPH",   "EP_FAIL",
  };
  if (code >= 0 && code < static_cast<int>(sizeof(kNames) / sizeof(kNames[0]))) {
    return kNames[code];
  }
  return "error " + std::to_string(code);
}

Status OrtLibrary::Load(const std::string& path, std::shared_ptr<OrtLibrary>* out) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  auto found = g_registry->find(path);
  if (found != g_registry->end()) {
    *out = found->second;
    return Status::Ok();
  }
  // RTLD_LOCAL: the library's symbols (its protobuf among them) stay out of the global
  // namespace, where onnxruntime's Python module or other extensions might meet them.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return Status::Unavailable("could not load the ONNX Runtime library: " +
                               std::string(why != nullptr ? why : path));
  }
  // Until the library is registered, a refusal unloads it again (nothing of it is in use).
  struct Unload {
    void* handle;
    ~Unload() {
      if (handle != nullptr) dlclose(handle);
    }
  } unload{handle};
  auto get_api_base =
      reinterpret_cast<ort::OrtGetApiBaseFn>(dlsym(handle, ort::kOrtGetApiBaseSymbol));
  if (get_api_base == nullptr) {
    return Status::Unavailable(path + " has no symbol " + ort::kOrtGetApiBaseSymbol +
                               ": not an ONNX Runtime library");
  }
  const ort::OrtApiBase* base = get_api_base();
  if (base == nullptr || base->GetApi == nullptr || base->GetVersionString == nullptr) {
    return Status::Unavailable(path + ": OrtGetApiBase returned no API");
  }
  const char* version = base->GetVersionString();
  int major = 0;
  int minor = 0;
  if (!ParseVersion(version, &major, &minor)) {
    return Status::Unavailable(path + ": unexpected ONNX Runtime version string '" +
                               std::string(version != nullptr ? version : "(null)") + "'");
  }
  // ONNX Runtime 1.N serves API versions 1..N. Asking an older runtime for a newer version
  // makes it print to stderr and return nullptr: refuse before asking, with the reason.
  if (major < 1 || (major == 1 && static_cast<uint32_t>(minor) < ort::kOrtApiVersion)) {
    return Status::Unavailable("ONNX Runtime " + std::string(version) + " at " + path +
                               " is too old: pyserver needs C API version " +
                               std::to_string(ort::kOrtApiVersion) + " (ONNX Runtime 1." +
                               std::to_string(ort::kOrtApiVersion) + " or later)");
  }
  const ort::OrtApi* api = base->GetApi(ort::kOrtApiVersion);
  if (api == nullptr) {
    return Status::Unavailable("ONNX Runtime " + std::string(version) + " at " + path +
                               " does not serve C API version " +
                               std::to_string(ort::kOrtApiVersion));
  }
  std::shared_ptr<OrtLibrary> library(new OrtLibrary);
  library->path_ = path;
  library->version_ = version;
  library->api_ = api;
  Status status =
      library->Check(api->CreateEnv(ort::kOrtLogWarning, "pyserver", &library->env_),
                     "CreateEnv", StatusCode::kUnavailable);
  if (!status.ok()) return status;
  unload.handle = nullptr;  // kept for the life of the process
  g_registry->emplace(path, library);
  *out = std::move(library);
  return Status::Ok();
}

Status OrtLibrary::Check(ort::OrtStatus* status, const char* call, StatusCode code) const {
  if (status == nullptr) return Status::Ok();
  std::string message = std::string(call) + ": " + OrtErrorCodeName(api_->GetErrorCode(status));
  const char* text = api_->GetErrorMessage(status);
  if (text != nullptr && *text != '\0') message += std::string(": ") + text;
  api_->ReleaseStatus(status);
  return Status(code, std::move(message));
}

}  // namespace core
}  // namespace pyserver
