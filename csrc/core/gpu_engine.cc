#include "core/gpu_engine.h"

#include <utility>

namespace pyserver {
namespace core {
namespace {

constexpr size_t kMinDeviceBuffer = 256;

// The next power of two >= bytes (and >= kMinDeviceBuffer): buffers grow a few times, then fit.
size_t Capacity(size_t bytes) {
  size_t capacity = kMinDeviceBuffer;
  while (capacity < bytes) capacity <<= 1;
  return capacity;
}

}  // namespace

Status DeviceOutputs::Allocate(size_t j, const Shape& shape, CUdeviceptr* ptr) {
  if (j >= slots_.size()) return Status::InvalidArgument("no output " + std::to_string(j));
  DeviceOutputSlot& slot = slots_[j];
  int64_t elements = 0;
  if (!ElementCount(shape, 0, &elements)) {
    return Status::InvalidArgument("output '" + slot.spec->name + "': invalid shape " +
                                   ShapeToString(shape));
  }
  const size_t bytes = static_cast<size_t>(elements) * ElementSize(slot.dtype);
  Status status = engine_->Reserve(&engine_->outputs_[j], bytes, "output '" + slot.spec->name + "'");
  if (!status.ok()) return status;
  slot.filled = true;
  slot.shape = shape;
  slot.ptr = engine_->outputs_[j].ptr;
  slot.bytes = bytes;
  *ptr = slot.ptr;
  return Status::Ok();
}

Status DeviceOutputs::Set(size_t j, const Shape& shape, DataType dtype, CUdeviceptr ptr,
                          size_t bytes) {
  if (j >= slots_.size()) return Status::InvalidArgument("no output " + std::to_string(j));
  DeviceOutputSlot& slot = slots_[j];
  slot.filled = true;
  slot.shape = shape;
  slot.dtype = dtype;
  slot.ptr = ptr;
  slot.bytes = bytes;
  return Status::Ok();
}

GpuEngine::GpuEngine(GpuEngineOptions options) : options_(std::move(options)) {}

GpuEngine::~GpuEngine() = default;  // OnWorkerExit freed the device state

std::string GpuEngine::Prefix() const { return "GPU " + std::to_string(options_.gpu) + ": "; }

void GpuEngine::OnWorkerStart() {
  // The primary context is the one the CUDA runtime (and so TensorRT and PyTorch) uses on this
  // GPU: sharing it lets their device pointers and ours mix. Made current once: every call on
  // this thread from now on runs in it.
  CudaDriver& driver = *options_.driver;
  Status status = driver.RetainPrimaryContext(options_.gpu, &context_);
  if (status.ok()) {
    context_retained_ = true;
    status = driver.SetCurrent(context_);
  }
  if (status.ok()) status = driver.StreamCreate(&stream_);
  if (status.ok()) stream_handle_ = reinterpret_cast<uint64_t>(stream_);
  start_status_ = status.ok() ? status : Status::Unavailable(Prefix() + status.message());
  if (start_status_.ok()) options_.kernel->OnWorkerStart();
}

void GpuEngine::OnWorkerExit() {
  CudaDriver& driver = *options_.driver;
  if (start_status_.ok()) options_.kernel->OnWorkerExit();
  if (stream_ != nullptr) {
    driver.StreamSynchronize(stream_);  // nothing may still read the buffers freed below
    for (auto* buffers : {&inputs_, &outputs_}) {
      for (DeviceBuffer& buffer : *buffers) {
        if (buffer.ptr != 0) driver.MemFree(buffer.ptr);
        buffer = DeviceBuffer();
      }
    }
    device_bytes_ = 0;
    driver.StreamDestroy(stream_);
    stream_ = nullptr;
  }
  if (context_retained_) driver.ReleasePrimaryContext(options_.gpu);
  context_retained_ = false;
  start_status_ = Status::Unavailable(Prefix() + "the instance has stopped");
}

std::shared_ptr<MutableBuffer> GpuEngine::AllocateInput(size_t bytes) {
  return options_.pool->Allocate(bytes, account_);
}

Status GpuEngine::Reserve(DeviceBuffer* buffer, size_t bytes, const std::string& what) {
  if (buffer->capacity >= bytes && buffer->ptr != 0) return Status::Ok();
  CudaDriver& driver = *options_.driver;
  if (buffer->ptr != 0) {
    // The previous batch synchronized its stream, so nothing still uses the old buffer.
    Status status = driver.MemFree(buffer->ptr);
    device_bytes_ -= static_cast<int64_t>(buffer->capacity);
    *buffer = DeviceBuffer();
    if (!status.ok()) return Status::Internal(Prefix() + what + ": " + status.message());
  }
  const size_t capacity = Capacity(bytes);
  Status status = driver.MemAlloc(&buffer->ptr, capacity);
  if (!status.ok()) {
    buffer->ptr = 0;
    return Status::Internal(Prefix() + what + ": " + std::to_string(capacity) +
                            " bytes of device memory: " + status.message());
  }
  buffer->capacity = capacity;
  device_bytes_ += static_cast<int64_t>(capacity);
  return Status::Ok();
}

Status GpuEngine::Execute(const BatchInputs& inputs, BatchOutputs* outputs) {
  if (!start_status_.ok()) return start_status_;
  CudaDriver& driver = *options_.driver;
  if (inputs_.size() < inputs.size()) inputs_.resize(inputs.size());
  if (outputs_.size() < outputs->size()) outputs_.resize(outputs->size());

  std::vector<DeviceTensor> device_inputs(inputs.size());
  Status status;
  for (size_t i = 0; i < inputs.size() && status.ok(); ++i) {
    const BatchTensor& input = inputs[i];
    if (input.dtype == DataType::kBytes) {
      status = Status::Internal("input '" + input.spec->name + "': BYTES tensors cannot go to a GPU");
      break;
    }
    const size_t bytes = input.buffer->size();
    status = Reserve(&inputs_[i], bytes, "input '" + input.spec->name + "'");
    // One copy per input: the gather already made the batch's rows contiguous.
    if (status.ok() && bytes > 0) {
      status = driver.MemcpyHtoDAsync(inputs_[i].ptr, input.buffer->data(), bytes, stream_);
    }
    DeviceTensor& tensor = device_inputs[i];
    tensor.spec = input.spec;
    tensor.dtype = input.dtype;
    tensor.shape = input.shape;
    tensor.ptr = inputs_[i].ptr;
    tensor.bytes = bytes;
  }

  DeviceOutputs device_outputs;
  device_outputs.engine_ = this;
  device_outputs.slots_.resize(outputs->size());
  for (size_t j = 0; j < outputs->size(); ++j) {
    device_outputs.slots_[j].spec = (*outputs)[j].spec;
    device_outputs.slots_[j].dtype = (*outputs)[j].dtype;
  }

  bool copied_back = false;
  if (status.ok()) {
    status = options_.kernel->Execute(stream_, device_inputs, &device_outputs, [&]() {
      copied_back = true;
      return CopyBack(device_outputs, outputs);
    });
    if (status.ok() && !copied_back) {
      status = Status::Internal(Prefix() + "the engine returned without its outputs' copy back");
    }
  }
  if (!status.ok()) {
    // Every failure names the GPU it happened on.
    if (status.message().rfind(Prefix(), 0) != 0) {
      status = Status(status.code(), Prefix() + status.message());
    }
    // Copies may still be in flight from the gathered inputs (freed when this batch ends) and
    // into the instance's buffers: wait for them before anything is reused or freed.
    driver.StreamSynchronize(stream_);
    for (BatchTensor& output : *outputs) output.buffer.reset();
  }
  return status;
}

Status GpuEngine::CopyBack(const DeviceOutputs& device, BatchOutputs* outputs) {
  CudaDriver& driver = *options_.driver;
  Status status;
  for (size_t j = 0; j < outputs->size() && status.ok(); ++j) {
    const DeviceOutputSlot& slot = device.slot(j);
    const std::string name = "output '" + slot.spec->name + "': ";
    if (!slot.filled) {
      status = Status::Internal(name + "the engine did not produce it");
      break;
    }
    int64_t elements = 0;
    if (!ElementCount(slot.shape, 0, &elements)) {
      status = Status::Internal(name + "the engine returned an invalid shape " +
                                ShapeToString(slot.shape));
      break;
    }
    if (static_cast<size_t>(elements) * ElementSize(slot.dtype) != slot.bytes) {
      status = Status::Internal(name + "the engine returned " + std::to_string(slot.bytes) +
                                " bytes for shape " + ShapeToString(slot.shape) + " of " +
                                DataTypeName(slot.dtype));
      break;
    }
    std::shared_ptr<MutableBuffer> host = options_.pool->Allocate(slot.bytes, account_);
    if (host == nullptr) {
      status = Status::Internal(name + "could not allocate " + std::to_string(slot.bytes) +
                                " bytes of host memory");
      break;
    }
    if (slot.bytes > 0) {
      status = driver.MemcpyDtoHAsync(host->mutable_data(), slot.ptr, slot.bytes, stream_);
    }
    BatchTensor& output = (*outputs)[j];
    output.dtype = slot.dtype;  // the batch's scatter checks it against the config
    output.shape = slot.shape;
    output.buffer = std::move(host);
  }
  // Always: the copies enqueued so far must finish before their memory is read or freed.
  Status synced = driver.StreamSynchronize(stream_);
  if (status.ok() && !synced.ok()) status = synced;
  if (!status.ok()) status = Status::Internal(Prefix() + status.message());
  return status;
}

}  // namespace core
}  // namespace pyserver
