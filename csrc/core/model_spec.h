// What the core must know of a model to check requests and batch them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace pyserver {
namespace core {

struct ModelSpec {
  std::string name;
  // 0: no batching; shapes have no batch dimension and every batch is one request.
  int64_t max_batch_size = 0;
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;

  bool batching() const { return max_batch_size > 0; }
};

}  // namespace core
}  // namespace pyserver
