// Batch: requests that run together, and the two copies-or-views at its ends.
//
// Gather copies each input's rows from every request into one contiguous buffer (the one copy
// batching needs). Scatter checks the engine's outputs and gives every request views of its own
// rows, sharing the output buffers (no copy).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/completion.h"
#include "core/engine.h"
#include "core/model_spec.h"
#include "core/request.h"
#include "core/status.h"

namespace pyserver {
namespace core {

class Batch {
 public:
  // requests: non-empty, all validated, with identical non-batch shapes for every input (the
  // batcher guarantees it), rows summing to at most max_batch_size (exactly one request when the
  // model does not batch).
  explicit Batch(std::vector<std::unique_ptr<Request>> requests);

  const std::vector<std::unique_ptr<Request>>& requests() const { return requests_; }
  // Total rows: the sum of the requests' batch dimensions (the request count without batching).
  int64_t rows() const { return rows_; }

  // One contiguous buffer per model input (from engine.AllocateInput: aligned heap memory, or
  // pinned memory for a GPU engine) holding every request's bytes in order (BYTES: their
  // framings concatenated), with the batch's shape.
  Status Gather(const ModelSpec& model, Engine& engine, BatchInputs* inputs) const;

  // Output slots for the engine, one per model output, with spec and datatype filled in (and
  // no shape or buffer, whatever `outputs` held before).
  void PrepareOutputs(const ModelSpec& model, BatchOutputs* outputs) const;

  // Checks the engine's outputs (count, dtype, first dimension == rows(), byte size or framing);
  // on success appends one OK completion per request, in request order, holding views of its
  // rows. On failure appends nothing and returns INTERNAL naming the output.
  Status Scatter(const ModelSpec& model, const BatchOutputs& outputs,
                 std::vector<Completion>* completions) const;

 private:
  Status CheckOutput(const ModelSpec& model, const TensorSpec& spec,
                     const BatchTensor& output) const;

  std::vector<std::unique_ptr<Request>> requests_;
  int64_t rows_ = 0;
};

}  // namespace core
}  // namespace pyserver
