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

  // What the client asked for: its priority (0 = the model's default level, 1 = highest) and
  // its queue timeout in microseconds (0 = none); the queue policy decides what applies.
  uint64_t priority = 0;
  uint64_t timeout_us = 0;

  // Set by validation: the batch dimension (identical across inputs), or 1 without batching.
  int64_t rows = 1;
  // Real steady-clock times (ns) for statistics: when submit began, when the request was queued.
  int64_t submit_ns = 0;
  int64_t queued_ns = 0;
  // The scheduler's clock (manual in tests) at enqueue: the queue-delay window runs from here.
  int64_t enqueue_ns = 0;

  // Set by the queue at enqueue: the priority level's index (0 = highest), the arrival number
  // (responses leave in this order when the model preserves ordering) and, on the scheduler's
  // clock, when its queue timeout runs out (0 = never).
  size_t level = 0;
  uint64_t sequence = 0;
  int64_t timeout_ns = 0;
  bool delay_on_timeout = false;  // the level's timeout_action is DELAY, not REJECT
  bool delayed = false;           // its timeout ran out and it waits behind its level

  RequestState state = RequestState::kQueued;
};

}  // namespace core
}  // namespace pyserver
