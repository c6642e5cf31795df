// CudaDriver: the CUDA driver API, loaded at run time with dlopen.
//
// Nothing CUDA is needed to build pyserver or to run it on a CPU machine: the core reaches the
// driver through this small table of function pointers, filled from libcuda.so.1 (or the file
// named by $PYSERVER_CUDA_DRIVER, which the tests point at a fake driver) on first use. Where
// the library or a symbol is missing, Load() returns UNAVAILABLE saying so, and every GPU
// feature reports that no CUDA driver was found.
//
// Every call goes through Check(), so a failure comes back as a Status naming the call and the
// driver's error ("cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (out of memory)").
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace pyserver {
namespace core {

// The driver's own types, as the driver API declares them (cuda.h is not needed to build).
using CUresult = int;
using CUdevice = int;
using CUcontext = struct CUctx_st*;
using CUstream = struct CUstream_st*;
using CUevent = struct CUevent_st*;
using CUdeviceptr = unsigned long long;  // NOLINT: the driver's definition
struct CUuuid {
  char bytes[16];
};

constexpr unsigned kCuStreamNonBlocking = 0x1;       // CU_STREAM_NON_BLOCKING
constexpr unsigned kCuMemHostAllocPortable = 0x1;    // CU_MEMHOSTALLOC_PORTABLE

struct CudaDevice {
  int index = 0;
  std::string name;
  std::string uuid;  // "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi prints it
  size_t total_memory = 0;
};

class CudaDriver {
 public:
  // dlopens `path` ("" = $PYSERVER_CUDA_DRIVER, else libcuda.so.1), resolves the table, calls
  // cuInit and lists the devices. UNAVAILABLE with the reason when any step fails.
  static Status Load(const std::string& path, std::shared_ptr<CudaDriver>* driver);

  // The process's driver, loaded on first use; nullptr with `error` set when there is none.
  // Thread-safe.
  static std::shared_ptr<CudaDriver> Default(std::string* error);
  // Replaces the process's driver (tests swap in a fake); "" restores the default search.
  // Engines made before keep the driver they hold.
  static void ReplaceDefault(const std::string& path);

  ~CudaDriver();  // never dlcloses: buffers freed late may still call into the library
  CudaDriver(const CudaDriver&) = delete;
  CudaDriver& operator=(const CudaDriver&) = delete;

  const std::string& library() const { return library_; }
  int version() const { return version_; }
  const std::vector<CudaDevice>& devices() const { return devices_; }

  // Each wrapper returns OK or an error naming the call. Preconditions are the driver's: a
  // context must be current for memory, stream and copy calls.
  // The primary context of `gpu`, retained once per call (pair with ReleasePrimaryContext).
  Status RetainPrimaryContext(int gpu, CUcontext* context);
  Status ReleasePrimaryContext(int gpu);
  Status SetCurrent(CUcontext context);
  Status GetCurrent(CUcontext* context);
  Status CurrentDevice(int* gpu);  // of the context current on this thread
  Status StreamCreate(CUstream* stream);
  Status StreamDestroy(CUstream stream);
  Status StreamSynchronize(CUstream stream);
  Status EventCreate(CUevent* event);  // with timing
  Status EventDestroy(CUevent event);
  Status EventRecord(CUevent event, CUstream stream);
  // Milliseconds between two completed events.
  Status EventElapsedTime(CUevent start, CUevent end, float* ms);
  Status MemAlloc(CUdeviceptr* ptr, size_t bytes);
  Status MemFree(CUdeviceptr ptr);
  Status MemHostAlloc(void** ptr, size_t bytes);  // page-locked, portable across contexts
  Status MemFreeHost(void* ptr);
  Status MemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes, CUstream stream);
  Status MemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream stream);

 private:
  struct Table;
  CudaDriver();
  Status Check(CUresult result, const char* call) const;
  Status ListDevices();

  std::string library_;
  void* handle_ = nullptr;
  std::unique_ptr<Table> fn_;
  int version_ = 0;
  std::vector<CudaDevice> devices_;
};

}  // namespace core
}  // namespace pyserver
