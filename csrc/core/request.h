// One inference request as it waits in the queue and runs in a batch.
//
// The inputs are raw pointers into memory the caller owns: the Python side keeps every input's
// buffer alive until the request's completion has been drained, so worker threads read them
// without the GIL and without copying until the gather.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/types.h"

namespace pyserver {
namespace core {

enum class RequestState {
  kQueued,     // waiting in the scheduler's queue
  kExecuting,  // taken into a batch that an instance runs
  kDone,       // its completion has been pushed
};

// One input's bytes and the shape the client gave (batch dimension first when batching).
struct InputData {
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  Shape shape;
};

struct Request {
  uint64_t id = 0;
  std::vector<InputData> inputs;  // in the model's input order

  // Set by validation: the batch dimension (identical across inputs), or 1 without batching.
  int64_t rows = 1;
  // Real steady-clock times (ns) for statistics: when submit began, when the request was queued.
  int64_t submit_ns = 0;
  int64_t queued_ns = 0;
  // The scheduler's clock (manual in tests) at enqueue: the queue-delay window runs from here.
  int64_t enqueue_ns = 0;

  RequestState state = RequestState::kQueued;
};

}  // namespace core
}  // namespace pyserver
