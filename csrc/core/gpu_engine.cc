#include "core/gpu_engine.h"

#include <utility>

namespace pyserver {
namespace core {
namespace {

constexpr size_t kMinDeviceBuffer = 256;

// The largest tensor the GPU path takes, in bytes: far beyond any device's memory, and small
// enough that no size arithmetic on it overflows.
constexpr size_t kMaxDeviceTensorBytes = size_t{1} << 48;

// The next power of two >= bytes (and >= kMinDeviceBuffer): buffers grow a few times, then fit.
// bytes <= kMaxDeviceTensorBytes, so the doubling cannot overflow.
size_t Capacity(size_t bytes) {
  size_t capacity = kMinDeviceBuffer;
  while (capacity < bytes) capacity <<= 1;
  return capacity;
}

// The byte size of `shape` of `dtype`; false for a negative dimension or a size over
// kMaxDeviceTensorBytes.
bool DeviceByteSize(const Shape& shape, DataType dtype, size_t* bytes) {
  int64_t elements = 0;
  uint64_t total = 0;
  if (!ElementCount(shape, 0, &elements) ||
      __builtin_mul_overflow(static_cast<uint64_t>(elements),
                             static_cast<uint64_t>(ElementSize(dtype)), &total) ||
      total > kMaxDeviceTensorBytes) {
    return false;
  }
  *bytes = static_cast<size_t>(total);
  return true;
}

// Checks shared by DeviceOutputs::Allocate and Set: the slot is not filled yet (a second fill
// could free memory the stream still writes) and the shape has a byte size.
Status CheckFill(const DeviceOutputSlot& slot, const Shape& shape, DataType dtype,
                 size_t* bytes) {
  if (slot.filled) {
    return Status::InvalidArgument("output '" + slot.spec->name + "': already allocated or set");
  }
  if (!DeviceByteSize(shape, dtype, bytes)) {
    return Status::InvalidArgument("output '" + slot.spec->name + "': invalid shape " +
                                   ShapeToString(shape) + " of " + DataTypeName(dtype));
  }
  return Status::Ok();
}

}  // namespace

Status DeviceOutputs::Allocate(size_t j, const Shape& shape, CUdeviceptr* ptr) {
  if (j >= slots_.size()) return Status::InvalidArgument("no output " + std::to_string(j));
  DeviceOutputSlot& slot = slots_[j];
  size_t bytes = 0;
  Status status = CheckFill(slot, shape, slot.dtype, &bytes);
  if (status.ok()) status = engine_->Reserve(&engine_->outputs_[j], bytes, "output", *slot.spec);
  if (!status.ok()) return status;
  slot.filled = true;
  slot.shape = shape;
  slot.ptr = engine_->outputs_[j].ptr;
  slot.bytes = bytes;
  *ptr = slot.ptr;
  return Status::Ok();
}

Status DeviceOutputs::Set(size_t j, const Shape& shape, DataType dtype, CUdeviceptr ptr,
                          CUstream producer) {
  if (j >= slots_.size()) return Status::InvalidArgument("no output " + std::to_string(j));
  DeviceOutputSlot& slot = slots_[j];
  size_t bytes = 0;
  Status status = CheckFill(slot, shape, dtype, &bytes);
  if (!status.ok()) return status;
  slot.filled = true;
  slot.shape = shape;
  slot.dtype = dtype;
  slot.ptr = ptr;
  slot.bytes = bytes;
  slot.producer = producer;
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
  for (int i = 0; status.ok() && i < kMarks; ++i) {
    CUevent event = nullptr;
    if (!driver.EventCreate(&event).ok()) {  // not fatal: only the statistics' split is lost
      for (CUevent made : marks_) driver.EventDestroy(made);
      marks_.clear();
      break;
    }
    marks_.push_back(event);
  }
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
    for (CUevent event : marks_) driver.EventDestroy(event);
    marks_.clear();
    driver.StreamDestroy(stream_);
    stream_ = nullptr;
  }
  if (context_retained_) driver.ReleasePrimaryContext(options_.gpu);
  context_retained_ = false;
  start_status_ = Status::Unavailable(Prefix() + "the instance has stopped");
}

std::shared_ptr<MutableBuffer> GpuEngine::AllocateInput(size_t bytes) {
  // Without a context current (the worker could not start) the pool must not be the first to
  // reserve its region: the driver would refuse, and the pool would never try again. This batch
  // fails with the start error anyway.
  if (!start_status_.ok()) return AlignedBuffer::Create(bytes);
  return options_.pool->Allocate(bytes, account_);
}

void GpuEngine::Mark(int point) {
  if (marks_.empty()) return;
  if (point == kBeforeInput) marks_ok_ = true;
  if (marks_ok_ && !options_.driver->EventRecord(marks_[point], stream_).ok()) marks_ok_ = false;
}

void GpuEngine::ReadMarks() {
  times_valid_ = false;
  if (marks_.empty() || !marks_ok_) return;
  float ms[3] = {0, 0, 0};
  CudaDriver& driver = *options_.driver;
  for (int i = 0; i < 3; ++i) {
    if (!driver.EventElapsedTime(marks_[i], marks_[i + 1], &ms[i]).ok()) return;
  }
  times_.input_ns = static_cast<int64_t>(ms[0] * 1e6);
  times_.infer_ns = static_cast<int64_t>(ms[1] * 1e6);
  times_.output_ns = static_cast<int64_t>(ms[2] * 1e6);
  times_valid_ = true;
  htod_bytes_ += batch_htod_bytes_;
  htod_ns_ += static_cast<uint64_t>(times_.input_ns);
  dtoh_bytes_ += batch_dtoh_bytes_;
  dtoh_ns_ += static_cast<uint64_t>(times_.output_ns);
}

bool GpuEngine::LastDeviceTimes(DeviceTimes* times) {
  if (!times_valid_) return false;
  *times = times_;
  times_valid_ = false;
  return true;
}

Status GpuEngine::Reserve(DeviceBuffer* buffer, size_t bytes, const char* kind,
                          const TensorSpec& spec) {
  if (buffer->capacity >= bytes && buffer->ptr != 0) return Status::Ok();
  CudaDriver& driver = *options_.driver;
  if (buffer->ptr != 0) {
    // The previous batch synchronized its stream, so nothing still uses the old buffer.
    Status status = driver.MemFree(buffer->ptr);
    device_bytes_ -= static_cast<int64_t>(buffer->capacity);
    *buffer = DeviceBuffer();
    if (!status.ok()) {
      return Status::Internal(std::string(kind) + " '" + spec.name + "': " + status.message());
    }
  }
  const size_t capacity = Capacity(bytes);
  Status status = driver.MemAlloc(&buffer->ptr, capacity);
  if (!status.ok()) {
    buffer->ptr = 0;
    return Status::Internal(std::string(kind) + " '" + spec.name + "': " +
                            std::to_string(capacity) + " bytes of device memory: " +
                            status.message());
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
  times_valid_ = false;
  batch_htod_bytes_ = batch_dtoh_bytes_ = 0;
  Mark(kBeforeInput);
  for (size_t i = 0; i < inputs.size() && status.ok(); ++i) {
    const BatchTensor& input = inputs[i];
    if (input.dtype == DataType::kBytes) {
      status = Status::Internal("input '" + input.spec->name + "': BYTES tensors cannot go to a GPU");
      break;
    }
    const size_t bytes = input.buffer->size();
    status = Reserve(&inputs_[i], bytes, "input", *input.spec);
    // One copy per input: the gather already made the batch's rows contiguous.
    if (status.ok() && bytes > 0) {
      status = driver.MemcpyHtoDAsync(inputs_[i].ptr, input.buffer->data(), bytes, stream_);
      batch_htod_bytes_ += bytes;
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

  Mark(kAfterInput);
  bool copied_back = false;
  if (status.ok()) {
    status = options_.kernel->Execute(stream_, device_inputs, &device_outputs, [&]() {
      copied_back = true;
      return CopyBack(device_outputs, outputs);
    });
    if (status.ok() && !copied_back) {
      status = Status::Internal("the engine returned without its outputs' copy back");
    }
  }
  if (!status.ok()) {
    // Every failure names the GPU it happened on (added here only, once).
    status = Status(status.code(), Prefix() + status.message());
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
  Mark(kAfterInfer);
  for (size_t j = 0; j < outputs->size() && status.ok(); ++j) {
    // Allocate and Set checked the slot's shape and computed its bytes.
    const DeviceOutputSlot& slot = device.slot(j);
    if (!slot.filled) {
      status = Status::Internal("output '" + slot.spec->name + "': the engine did not produce it");
      break;
    }
    if (slot.producer != nullptr && slot.producer != stream_) {
      // Written on another stream: the copy below, on ours, must not start before it is done.
      status = driver.StreamSynchronize(slot.producer);
      if (!status.ok()) break;
    }
    std::shared_ptr<MutableBuffer> host = options_.pool->Allocate(slot.bytes, account_);
    if (host == nullptr) {
      status = Status::Internal("output '" + slot.spec->name + "': could not allocate " +
                                std::to_string(slot.bytes) + " bytes of host memory");
      break;
    }
    if (slot.bytes > 0) {
      status = driver.MemcpyDtoHAsync(host->mutable_data(), slot.ptr, slot.bytes, stream_);
      batch_dtoh_bytes_ += slot.bytes;
    }
    BatchTensor& output = (*outputs)[j];
    output.dtype = slot.dtype;  // the batch's scatter checks it against the config
    output.shape = slot.shape;
    output.buffer = std::move(host);
  }
  Mark(kAfterOutput);
  // Always: the copies enqueued so far must finish before their memory is read or freed.
  Status synced = driver.StreamSynchronize(stream_);
  if (status.ok() && !synced.ok()) status = synced;
  if (status.ok()) ReadMarks();
  if (!status.ok()) status = Status::Internal(status.message());
  return status;
}

}  // namespace core
}  // namespace pyserver
