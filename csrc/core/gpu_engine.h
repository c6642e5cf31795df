// GpuEngine: an instance's engine on one GPU, wrapping a DeviceKernel (the model itself:
// TensorRT, PyTorch on CUDA, or a C++ kernel in tests).
//
// Per batch, on the instance's worker thread (its GPU's primary context made current once, at
// worker start; one CUDA stream per instance):
//   gather into pinned memory (AllocateInput; the pool falls back to heap memory when full)
//   -> one host-to-device copy per input into the instance's device buffers
//   -> the kernel enqueues the model on the stream and fills every output: in the instance's
//      device buffers (DeviceOutputs::Allocate) or in memory of its own (DeviceOutputs::Set)
//   -> one device-to-host copy per output into pinned memory -> synchronize the stream
//   -> the batch scatters views of the pinned outputs to its requests, as on the CPU.
// Device buffers are kept between batches and grow to the largest batch seen.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/cuda_driver.h"
#include "core/engine.h"
#include "core/pinned_pool.h"

namespace pyserver {
namespace core {

// One input of the batch in device memory.
struct DeviceTensor {
  const TensorSpec* spec = nullptr;
  DataType dtype = DataType::kInvalid;
  Shape shape;
  CUdeviceptr ptr = 0;
  size_t bytes = 0;
};

// One output as the kernel leaves it.
struct DeviceOutputSlot {
  const TensorSpec* spec = nullptr;
  DataType dtype = DataType::kInvalid;
  bool filled = false;
  Shape shape;
  CUdeviceptr ptr = 0;
  size_t bytes = 0;
  // Set: the stream the kernel's memory was written on, when not the instance's (0 = the
  // instance's): the copy back waits for it first.
  CUstream producer = nullptr;
};

class GpuEngine;

// The outputs of one batch, for the kernel to fill.
class DeviceOutputs {
 public:
  size_t size() const { return slots_.size(); }
  const DeviceOutputSlot& slot(size_t j) const { return slots_[j]; }
  // Device memory of the instance's for output j with `shape` (the output's datatype).
  // INVALID_ARGUMENT for a bad shape, INTERNAL when device memory cannot be had.
  Status Allocate(size_t j, const Shape& shape, CUdeviceptr* ptr);
  // Memory the kernel owns holds output j, written on `producer` (nullptr: the instance's
  // stream); it must stay valid until copy_back returns.
  Status Set(size_t j, const Shape& shape, DataType dtype, CUdeviceptr ptr,
             CUstream producer = nullptr);

 private:
  friend class GpuEngine;
  GpuEngine* engine_ = nullptr;
  std::vector<DeviceOutputSlot> slots_;
};

class DeviceKernel {
 public:
  virtual ~DeviceKernel() = default;
  // Enqueues the model on `stream` and fills every output, then calls copy_back() exactly once
  // (the core's copies to host and the stream's synchronization; memory the kernel set must
  // still be valid then) and returns its status, or returns an error without calling it.
  virtual Status Execute(CUstream stream, const std::vector<DeviceTensor>& inputs,
                         DeviceOutputs* outputs, const std::function<Status()>& copy_back) = 0;
  // On the worker thread, with the GPU's context current, at start and before it exits.
  virtual void OnWorkerStart() {}
  virtual void OnWorkerExit() {}
};

struct GpuEngineOptions {
  int gpu = 0;
  std::shared_ptr<CudaDriver> driver;
  std::shared_ptr<PinnedPool> pool;
  std::shared_ptr<DeviceKernel> kernel;
};

class GpuEngine final : public Engine {
 public:
  explicit GpuEngine(GpuEngineOptions options);
  ~GpuEngine() override;

  Status Execute(const BatchInputs& inputs, BatchOutputs* outputs) override;
  void OnWorkerStart() override;  // context current, stream created
  void OnWorkerExit() override;   // device buffers freed, stream destroyed, context released
  std::shared_ptr<MutableBuffer> AllocateInput(size_t bytes) override;
  bool LastDeviceTimes(DeviceTimes* times) override;

  int gpu() const { return options_.gpu; }
  uint64_t stream_handle() const { return stream_handle_.load(); }
  int64_t device_memory_bytes() const { return device_bytes_.load(); }
  int64_t pinned_bytes() const { return account_->pinned.load(); }
  int64_t fallback_bytes() const { return account_->fallback.load(); }
  // Since start, from the device's events: bytes copied each way and the time the copies took.
  struct CopyTotals {
    uint64_t htod_bytes = 0, htod_ns = 0, dtoh_bytes = 0, dtoh_ns = 0;
  };
  CopyTotals copy_totals() const {
    return {htod_bytes_.load(), htod_ns_.load(), dtoh_bytes_.load(), dtoh_ns_.load()};
  }

 private:
  friend class DeviceOutputs;
  struct DeviceBuffer {
    CUdeviceptr ptr = 0;
    size_t capacity = 0;
  };
  // Worker thread only: at least `bytes` of device memory in `buffer` (contents not kept) for
  // the tensor `kind` ("input" or "output") `spec`, whose name its errors carry.
  Status Reserve(DeviceBuffer* buffer, size_t bytes, const char* kind, const TensorSpec& spec);
  // Worker thread only: the copies back to pinned memory and the stream's synchronization.
  // Its errors, like every error of the batch, get the GPU's prefix in Execute.
  Status CopyBack(const DeviceOutputs& device, BatchOutputs* outputs);
  // Worker thread only: marks a point of the batch on the stream (a no-op without events).
  void Mark(int point);
  // Worker thread only, after the stream synchronized: the batch's device times from the marks.
  void ReadMarks();
  std::string Prefix() const;

  const GpuEngineOptions options_;
  std::shared_ptr<MemoryAccount> account_ = std::make_shared<MemoryAccount>();
  // Worker thread only:
  Status start_status_ = Status::Unavailable("the instance's worker has not started");
  CUcontext context_ = nullptr;
  bool context_retained_ = false;
  CUstream stream_ = nullptr;
  std::vector<DeviceBuffer> inputs_;
  std::vector<DeviceBuffer> outputs_;
  // Timing events on the stream: before the copies in, after them, after the model, after the
  // copies back. Empty when they could not be made (the statistics then time the whole batch
  // on the host as compute_infer).
  enum { kBeforeInput, kAfterInput, kAfterInfer, kAfterOutput, kMarks };
  std::vector<CUevent> marks_;
  bool marks_ok_ = false;  // every mark of this batch was recorded
  bool times_valid_ = false;
  DeviceTimes times_;
  size_t batch_htod_bytes_ = 0;
  size_t batch_dtoh_bytes_ = 0;
  std::atomic<uint64_t> htod_bytes_{0}, htod_ns_{0}, dtoh_bytes_{0}, dtoh_ns_{0};
  // Read from any thread (statistics):
  std::atomic<uint64_t> stream_handle_{0};
  std::atomic<int64_t> device_bytes_{0};
};

}  // namespace core
}  // namespace pyserver
