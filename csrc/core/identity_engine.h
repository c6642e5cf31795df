// IdentityEngine: output i is input i, same bytes, zero copy. It measures the server's own
// overhead with no model cost; execute_delay_us stands in for a model's compute time.
#pragma once

#include <atomic>
#include <cstdint>

#include "core/engine.h"

namespace pyserver {
namespace core {

struct IdentityEngineOptions {
  int64_t execute_delay_us = 0;  // slept once per batch
};

class IdentityEngine final : public Engine {
 public:
  explicit IdentityEngine(IdentityEngineOptions options) : options_(options) {}
  Status Execute(const BatchInputs& inputs, BatchOutputs* outputs) override;

  // What it has run: batches and rows (tests check what did and did not execute).
  uint64_t executions() const { return executions_.load(std::memory_order_relaxed); }
  uint64_t rows() const { return rows_.load(std::memory_order_relaxed); }

 private:
  IdentityEngineOptions options_;
  std::atomic<uint64_t> executions_{0};
  std::atomic<uint64_t> rows_{0};
};

}  // namespace core
}  // namespace pyserver
