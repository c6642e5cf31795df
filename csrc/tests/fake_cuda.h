// The fake CUDA driver (tests/fakes/fake_cuda.c) from C++ tests: the core's CudaDriver loaded
// from it, and its test controls (call counters, injected failures).
//
// The fake is a shared library built by the test runner (tests/unit/test_core_cpp.py, or
// tools/sanitize.sh with the same sanitizer as the test); its path comes in
// $PYSERVER_CUDA_DRIVER, the variable the core itself reads. The test dlopens the same path
// the driver loaded, so both reach one copy of the library and its counters. Its "device
// memory" is host memory: a kernel written for a test reads and writes it directly.
#pragma once

#include <dlfcn.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "core/cuda_driver.h"
#include "tests/check.h"

namespace pyserver {
namespace testing {

constexpr int kCudaErrorOutOfMemory = 2;  // CUDA_ERROR_OUT_OF_MEMORY

class FakeCuda {
 public:
  // Loads the fake, resets it to `devices` GPUs with every counter at 0, and loads the core's
  // driver from it. Fails the test when $PYSERVER_CUDA_DRIVER is not set or does not load.
  explicit FakeCuda(int devices = 2, Location where = PYSERVER_CALLER) {
    const char* path = std::getenv("PYSERVER_CUDA_DRIVER");
    CHECK_MSG_AT(where, path != nullptr && *path != '\0',
                 "set PYSERVER_CUDA_DRIVER to the fake driver built from tests/fakes/fake_cuda.c");
    // Never closed: the driver keeps its own handle to the same library open anyway.
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG_AT(where, handle != nullptr, "dlopen " << path << ": " << dlerror());
    reset_ = reinterpret_cast<void (*)(int)>(dlsym(handle, "fake_cuda_reset"));
    counters_ = reinterpret_cast<void (*)(long long*)>(dlsym(handle, "fake_cuda_counters"));
    fail_next_ =
        reinterpret_cast<void (*)(const char*, int)>(dlsym(handle, "fake_cuda_fail_next"));
    auto names = reinterpret_cast<const char* (*)()>(dlsym(handle, "fake_cuda_counter_names"));
    CHECK_MSG_AT(where, reset_ != nullptr && counters_ != nullptr && fail_next_ != nullptr &&
                            names != nullptr,
                 path << " is not the fake driver (no fake_cuda_* controls)");
    std::istringstream list(names());
    for (std::string name; std::getline(list, name, ',');) names_.push_back(name);
    reset_(devices);
    core::Status status = core::CudaDriver::Load(path, &driver_);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }

  const std::shared_ptr<core::CudaDriver>& driver() const { return driver_; }

  // Every counter by name ("retain", "htod_bytes", ...: fake_cuda.c lists them).
  std::map<std::string, long long> Counters() const {
    std::vector<long long> values(names_.size());
    counters_(values.data());
    std::map<std::string, long long> out;
    for (size_t i = 0; i < names_.size(); ++i) out[names_[i]] = values[i];
    return out;
  }
  long long Counter(const std::string& name, Location where = PYSERVER_CALLER) const {
    std::map<std::string, long long> all = Counters();
    auto it = all.find(name);
    CHECK_MSG_AT(where, it != all.end(), "the fake driver has no counter '" << name << "'");
    return it->second;
  }

  // The next call of `symbol` ("cuMemAlloc_v2") fails with `code`.
  void FailNext(const std::string& symbol, int code = kCudaErrorOutOfMemory) {
    fail_next_(symbol.c_str(), code);
  }

 private:
  void (*reset_)(int) = nullptr;
  void (*counters_)(long long*) = nullptr;
  void (*fail_next_)(const char*, int) = nullptr;
  std::vector<std::string> names_;
  std::shared_ptr<core::CudaDriver> driver_;
};

// Makes a GPU's primary context current on the calling thread for its lifetime (retained),
// then restores what was current before and releases it.
class ContextScope {
 public:
  ContextScope(core::CudaDriver& driver, int gpu, Location where = PYSERVER_CALLER)
      : driver_(driver), gpu_(gpu) {
    core::Status status = driver_.GetCurrent(&previous_);
    if (status.ok()) status = driver_.RetainPrimaryContext(gpu, &context_);
    if (status.ok()) status = driver_.SetCurrent(context_);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }
  ~ContextScope() {
    driver_.SetCurrent(previous_);
    driver_.ReleasePrimaryContext(gpu_);
  }
  ContextScope(const ContextScope&) = delete;
  ContextScope& operator=(const ContextScope&) = delete;

  core::CUcontext context() const { return context_; }

 private:
  core::CudaDriver& driver_;
  int gpu_;
  core::CUcontext previous_ = nullptr;
  core::CUcontext context_ = nullptr;
};

}  // namespace testing
}  // namespace pyserver
