// What a request gets back: its status and, on success, a view of each output.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"

namespace pyserver {
namespace core {

// One request's slice of one batch output: bytes [offset, offset + bytes) of owner's buffer.
// Many views share one owner (the batch's output buffer); the last one to go frees it.
struct OutputView {
  std::shared_ptr<Buffer> owner;
  size_t offset = 0;
  size_t bytes = 0;
  Shape shape;  // with the request's own batch dimension first when the model batches
};

struct Completion {
  uint64_t request_id = 0;
  Status status;
  std::vector<OutputView> outputs;  // in the model's output order; empty unless status is OK
};

}  // namespace core
}  // namespace pyserver
