#include "core/identity_engine.h"

#include <chrono>
#include <string>
#include <thread>

namespace pyserver {
namespace core {

Status IdentityEngine::Execute(const BatchInputs& inputs, BatchOutputs* outputs) {
  executions_.fetch_add(1, std::memory_order_relaxed);
  if (!inputs.empty() && !inputs[0].shape.empty()) {
    rows_.fetch_add(static_cast<uint64_t>(inputs[0].shape[0]), std::memory_order_relaxed);
  }
  if (options_.execute_delay_us > 0) {
    std::this_thread::sleep_for(std::chrono::microseconds(options_.execute_delay_us));
  }
  if (outputs->size() > inputs.size()) {
    return Status::Internal("identity engine: the model has " + std::to_string(outputs->size()) +
                            " outputs but only " + std::to_string(inputs.size()) +
                            " inputs to echo");
  }
  for (size_t i = 0; i < outputs->size(); ++i) {
    BatchTensor& out = (*outputs)[i];
    // Zero copy: the output shares the gathered input buffer; requests' views keep it alive.
    out.dtype = inputs[i].dtype;
    out.shape = inputs[i].shape;
    out.buffer = inputs[i].buffer;
  }
  return Status::Ok();
}

}  // namespace core
}  // namespace pyserver
