#include "core/cuda_driver.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <utility>

namespace pyserver {
namespace core {

// The driver functions the core calls. The names are the symbols libcuda exports; where the
// API was versioned (_v2) the current symbol is the one resolved, as cuda.h's macros would.
struct CudaDriver::Table {
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuGetErrorName)(CUresult, const char**) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDeviceGetUuid)(CUuuid*, CUdevice) = nullptr;
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRetain)(CUcontext*, CUdevice) = nullptr;
  CUresult (*cuDevicePrimaryCtxRelease)(CUdevice) = nullptr;
  CUresult (*cuCtxSetCurrent)(CUcontext) = nullptr;
  CUresult (*cuCtxGetCurrent)(CUcontext*) = nullptr;
  CUresult (*cuCtxGetDevice)(CUdevice*) = nullptr;
  CUresult (*cuStreamCreate)(CUstream*, unsigned) = nullptr;
  CUresult (*cuStreamDestroy)(CUstream) = nullptr;
  CUresult (*cuStreamSynchronize)(CUstream) = nullptr;
  CUresult (*cuEventCreate)(CUevent*, unsigned) = nullptr;
  CUresult (*cuEventDestroy)(CUevent) = nullptr;
  CUresult (*cuEventRecord)(CUevent, CUstream) = nullptr;
  CUresult (*cuEventElapsedTime)(float*, CUevent, CUevent) = nullptr;
  CUresult (*cuMemAlloc)(CUdeviceptr*, size_t) = nullptr;
  CUresult (*cuMemFree)(CUdeviceptr) = nullptr;
  CUresult (*cuMemHostAlloc)(void**, size_t, unsigned) = nullptr;
  CUresult (*cuMemFreeHost)(void*) = nullptr;
  CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void*, size_t, CUstream) = nullptr;
  CUresult (*cuMemcpyDtoHAsync)(void*, CUdeviceptr, size_t, CUstream) = nullptr;
};

namespace {

// Resolves one symbol (the first of `names` that exists) into `slot`; false when none does.
template <typename Fn>
bool Resolve(void* handle, Fn* slot, std::initializer_list<const char*> names,
             std::string* missing) {
  for (const char* name : names) {
    if (void* symbol = dlsym(handle, name)) {
      *slot = reinterpret_cast<Fn>(symbol);
      return true;
    }
  }
  *missing = *names.begin();
  return false;
}

std::string FormatUuid(const CUuuid& uuid) {
  const auto* b = reinterpret_cast<const unsigned char*>(uuid.bytes);
  char text[64];
  std::snprintf(text, sizeof(text),
                "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                b[14], b[15]);
  return text;
}

std::mutex g_default_mu;  // guards the three below
std::shared_ptr<CudaDriver> g_default;
std::string g_default_error;
std::string g_default_path;  // "" = the default search
bool g_default_tried = false;

}  // namespace

CudaDriver::CudaDriver() : fn_(new Table) {}

CudaDriver::~CudaDriver() = default;

Status CudaDriver::Load(const std::string& path, std::shared_ptr<CudaDriver>* out) {
  std::string library = path;
  if (library.empty()) {
    const char* configured = std::getenv("PYSERVER_CUDA_DRIVER");
    library = configured != nullptr && *configured != '\0' ? configured : "libcuda.so.1";
  }
  void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return Status::Unavailable("no CUDA driver was found: " +
                               std::string(why != nullptr ? why : library));
  }
  std::shared_ptr<CudaDriver> driver(new CudaDriver);
  driver->library_ = library;
  driver->handle_ = handle;
  Table& t = *driver->fn_;
  std::string missing;
  const bool resolved =
      Resolve(handle, &t.cuInit, {"cuInit"}, &missing) &&
      Resolve(handle, &t.cuDriverGetVersion, {"cuDriverGetVersion"}, &missing) &&
      Resolve(handle, &t.cuGetErrorName, {"cuGetErrorName"}, &missing) &&
      Resolve(handle, &t.cuGetErrorString, {"cuGetErrorString"}, &missing) &&
      Resolve(handle, &t.cuDeviceGetCount, {"cuDeviceGetCount"}, &missing) &&
      Resolve(handle, &t.cuDeviceGet, {"cuDeviceGet"}, &missing) &&
      Resolve(handle, &t.cuDeviceGetName, {"cuDeviceGetName"}, &missing) &&
      Resolve(handle, &t.cuDeviceGetUuid, {"cuDeviceGetUuid_v2", "cuDeviceGetUuid"}, &missing) &&
      Resolve(handle, &t.cuDeviceTotalMem, {"cuDeviceTotalMem_v2"}, &missing) &&
      Resolve(handle, &t.cuDevicePrimaryCtxRetain, {"cuDevicePrimaryCtxRetain"}, &missing) &&
      Resolve(handle, &t.cuDevicePrimaryCtxRelease, {"cuDevicePrimaryCtxRelease_v2"},
              &missing) &&
      Resolve(handle, &t.cuCtxSetCurrent, {"cuCtxSetCurrent"}, &missing) &&
      Resolve(handle, &t.cuCtxGetCurrent, {"cuCtxGetCurrent"}, &missing) &&
      Resolve(handle, &t.cuCtxGetDevice, {"cuCtxGetDevice"}, &missing) &&
      Resolve(handle, &t.cuStreamCreate, {"cuStreamCreate"}, &missing) &&
      Resolve(handle, &t.cuStreamDestroy, {"cuStreamDestroy_v2"}, &missing) &&
      Resolve(handle, &t.cuStreamSynchronize, {"cuStreamSynchronize"}, &missing) &&
      Resolve(handle, &t.cuEventCreate, {"cuEventCreate"}, &missing) &&
      Resolve(handle, &t.cuEventDestroy, {"cuEventDestroy_v2"}, &missing) &&
      Resolve(handle, &t.cuEventRecord, {"cuEventRecord"}, &missing) &&
      Resolve(handle, &t.cuEventElapsedTime, {"cuEventElapsedTime"}, &missing) &&
      Resolve(handle, &t.cuMemAlloc, {"cuMemAlloc_v2"}, &missing) &&
      Resolve(handle, &t.cuMemFree, {"cuMemFree_v2"}, &missing) &&
      Resolve(handle, &t.cuMemHostAlloc, {"cuMemHostAlloc"}, &missing) &&
      Resolve(handle, &t.cuMemFreeHost, {"cuMemFreeHost"}, &missing) &&
      Resolve(handle, &t.cuMemcpyHtoDAsync, {"cuMemcpyHtoDAsync_v2"}, &missing) &&
      Resolve(handle, &t.cuMemcpyDtoHAsync, {"cuMemcpyDtoHAsync_v2"}, &missing);
  if (!resolved) {
    return Status::Unavailable("the CUDA driver " + library + " has no symbol " + missing +
                               " (a driver older than CUDA 11?)");
  }
  Status status = driver->Check(t.cuInit(0), "cuInit");
  if (!status.ok()) return Status::Unavailable("no usable CUDA driver: " + status.message());
  status = driver->Check(t.cuDriverGetVersion(&driver->version_), "cuDriverGetVersion");
  if (status.ok()) status = driver->ListDevices();
  if (!status.ok()) return Status::Unavailable("no usable CUDA driver: " + status.message());
  *out = std::move(driver);
  return Status::Ok();
}

std::shared_ptr<CudaDriver> CudaDriver::Default(std::string* error) {
  std::lock_guard<std::mutex> lock(g_default_mu);
  if (!g_default_tried) {
    g_default_tried = true;
    Status status = Load(g_default_path, &g_default);
    g_default_error = status.ok() ? "" : status.message();
  }
  if (error != nullptr) *error = g_default_error;
  return g_default;
}

void CudaDriver::ReplaceDefault(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_default_mu);
  g_default_path = path;
  g_default.reset();
  g_default_error.clear();
  g_default_tried = false;
}

Status CudaDriver::Check(CUresult result, const char* call) const {
  if (result == 0) return Status::Ok();
  const char* name = nullptr;
  const char* text = nullptr;
  if (fn_->cuGetErrorName == nullptr || fn_->cuGetErrorName(result, &name) != 0) name = nullptr;
  if (fn_->cuGetErrorString == nullptr || fn_->cuGetErrorString(result, &text) != 0) {
    text = nullptr;
  }
  std::string message = std::string(call) + ": ";
  message += name != nullptr ? name : "CUDA error " + std::to_string(result);
  if (text != nullptr) message += std::string(" (") + text + ")";
  return Status::Internal(std::move(message));
}

Status CudaDriver::ListDevices() {
  int count = 0;
  Status status = Check(fn_->cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (!status.ok()) return status;
  for (int i = 0; i < count; ++i) {
    CUdevice device = 0;
    if (!(status = Check(fn_->cuDeviceGet(&device, i), "cuDeviceGet")).ok()) return status;
    CudaDevice info;
    info.index = i;
    char name[256] = {0};
    if (!(status = Check(fn_->cuDeviceGetName(name, sizeof(name) - 1, device),
                         "cuDeviceGetName")).ok()) {
      return status;
    }
    info.name = name;
    CUuuid uuid{};
    if (!(status = Check(fn_->cuDeviceGetUuid(&uuid, device), "cuDeviceGetUuid")).ok()) {
      return status;
    }
    info.uuid = FormatUuid(uuid);
    if (!(status = Check(fn_->cuDeviceTotalMem(&info.total_memory, device),
                         "cuDeviceTotalMem_v2")).ok()) {
      return status;
    }
    devices_.push_back(std::move(info));
  }
  return Status::Ok();
}

Status CudaDriver::RetainPrimaryContext(int gpu, CUcontext* context) {
  CUdevice device = 0;
  Status status = Check(fn_->cuDeviceGet(&device, gpu), "cuDeviceGet");
  if (!status.ok()) return status;
  return Check(fn_->cuDevicePrimaryCtxRetain(context, device), "cuDevicePrimaryCtxRetain");
}

Status CudaDriver::ReleasePrimaryContext(int gpu) {
  CUdevice device = 0;
  Status status = Check(fn_->cuDeviceGet(&device, gpu), "cuDeviceGet");
  if (!status.ok()) return status;
  return Check(fn_->cuDevicePrimaryCtxRelease(device), "cuDevicePrimaryCtxRelease_v2");
}

Status CudaDriver::SetCurrent(CUcontext context) {
  return Check(fn_->cuCtxSetCurrent(context), "cuCtxSetCurrent");
}

Status CudaDriver::GetCurrent(CUcontext* context) {
  return Check(fn_->cuCtxGetCurrent(context), "cuCtxGetCurrent");
}

Status CudaDriver::CurrentDevice(int* gpu) {
  CUdevice device = 0;
  Status status = Check(fn_->cuCtxGetDevice(&device), "cuCtxGetDevice");
  if (status.ok()) *gpu = device;
  return status;
}

Status CudaDriver::StreamCreate(CUstream* stream) {
  // Non-blocking: the instance's copies and kernels must not serialize with the legacy default
  // stream that other libraries in the process may use.
  return Check(fn_->cuStreamCreate(stream, kCuStreamNonBlocking), "cuStreamCreate");
}

Status CudaDriver::StreamDestroy(CUstream stream) {
  return Check(fn_->cuStreamDestroy(stream), "cuStreamDestroy_v2");
}

Status CudaDriver::StreamSynchronize(CUstream stream) {
  return Check(fn_->cuStreamSynchronize(stream), "cuStreamSynchronize");
}

Status CudaDriver::EventCreate(CUevent* event) {
  return Check(fn_->cuEventCreate(event, 0), "cuEventCreate");  // 0: CU_EVENT_DEFAULT, timed
}

Status CudaDriver::EventDestroy(CUevent event) {
  return Check(fn_->cuEventDestroy(event), "cuEventDestroy_v2");
}

Status CudaDriver::EventRecord(CUevent event, CUstream stream) {
  return Check(fn_->cuEventRecord(event, stream), "cuEventRecord");
}

Status CudaDriver::EventElapsedTime(CUevent start, CUevent end, float* ms) {
  return Check(fn_->cuEventElapsedTime(ms, start, end), "cuEventElapsedTime");
}

Status CudaDriver::MemAlloc(CUdeviceptr* ptr, size_t bytes) {
  return Check(fn_->cuMemAlloc(ptr, bytes), "cuMemAlloc_v2");
}

Status CudaDriver::MemFree(CUdeviceptr ptr) { return Check(fn_->cuMemFree(ptr), "cuMemFree_v2"); }

Status CudaDriver::MemHostAlloc(void** ptr, size_t bytes) {
  // Portable: one pool serves instances on every GPU, each with its own context.
  return Check(fn_->cuMemHostAlloc(ptr, bytes, kCuMemHostAllocPortable), "cuMemHostAlloc");
}

Status CudaDriver::MemFreeHost(void* ptr) {
  return Check(fn_->cuMemFreeHost(ptr), "cuMemFreeHost");
}

Status CudaDriver::MemcpyHtoDAsync(CUdeviceptr dst, const void* src, size_t bytes,
                                   CUstream stream) {
  return Check(fn_->cuMemcpyHtoDAsync(dst, src, bytes, stream), "cuMemcpyHtoDAsync_v2");
}

Status CudaDriver::MemcpyDtoHAsync(void* dst, CUdeviceptr src, size_t bytes, CUstream stream) {
  return Check(fn_->cuMemcpyDtoHAsync(dst, src, bytes, stream), "cuMemcpyDtoHAsync_v2");
}

}  // namespace core
}  // namespace pyserver
