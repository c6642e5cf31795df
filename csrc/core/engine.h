// Engine: what an instance runs, once per batch.
//
// The instance hands the engine one tensor per model input (the batch's gathered rows) and one
// slot per model output, pre-filled with the output's spec and datatype; the engine fills each
// slot's shape and buffer (and its dtype, if it produced another one: the instance checks). The
// instance validates what comes back before any request sees it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace pyserver {
namespace core {

struct BatchTensor {
  const TensorSpec* spec = nullptr;  // owned by the scheduler's ModelSpec, outlives the batch
  DataType dtype = DataType::kInvalid;
  Shape shape;                     // with the batch dimension first when the model batches
  std::shared_ptr<Buffer> buffer;  // BYTES tensors hold the length framing (framing.h)
};

using BatchInputs = std::vector<BatchTensor>;
using BatchOutputs = std::vector<BatchTensor>;

// How the last batch's time on a device split (engines that run on one report it).
struct DeviceTimes {
  int64_t input_ns = 0;   // the copies to the device
  int64_t infer_ns = 0;   // the model
  int64_t output_ns = 0;  // the copies back
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Runs one batch on the instance's worker thread. Never throws across the thread boundary on
  // purpose (the worker still catches, as a last resort); failures are a Status.
  virtual Status Execute(const BatchInputs& inputs, BatchOutputs* outputs) = 0;

  // Called on the worker thread when it starts and just before it exits: an engine that needs
  // per-thread state (a Python thread state, a device context) sets it up and tears it down here.
  virtual void OnWorkerStart() {}
  virtual void OnWorkerExit() {}

  // Where the batch's inputs are gathered, on the worker thread: aligned heap memory, or, for
  // an engine on a GPU, pinned memory its copies read fastest. nullptr when none can be had.
  virtual std::shared_ptr<MutableBuffer> AllocateInput(size_t bytes) {
    return AlignedBuffer::Create(bytes);
  }

  // After a successful Execute, on the worker thread: the device's own timing of that batch,
  // when the engine measured one. The instance then counts the copies to the device as
  // compute_input and the copies back as compute_output, as Triton does, and the model's time
  // on the device as compute_infer.
  virtual bool LastDeviceTimes(DeviceTimes* times) {
    (void)times;
    return false;
  }
};

}  // namespace core
}  // namespace pyserver
