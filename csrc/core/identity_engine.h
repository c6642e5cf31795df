// IdentityEngine: output i is input i, same bytes, zero copy. It measures the server's own
// overhead with no model cost; execute_delay_us stands in for a model's compute time.
#pragma once

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

 private:
  IdentityEngineOptions options_;
};

}  // namespace core
}  // namespace pyserver
