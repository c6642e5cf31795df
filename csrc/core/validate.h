// Request validation: cheap checks at submit, before a request may join a batch.
#pragma once

#include "core/model_spec.h"
#include "core/request.h"
#include "core/status.h"

namespace pyserver {
namespace core {

// Checks the request against the model: input count; each input's rank and dims (dims exclude
// the batch dimension when batching, -1 matches any size); the batch dimension in
// 1..max_batch_size and equal across inputs; the byte size (elements * itemsize, or for BYTES a
// framing that holds exactly `elements` elements and nothing else). On success sets
// request->rows. Errors are INVALID_ARGUMENT naming the input.
Status ValidateRequest(const ModelSpec& model, Request* request);

}  // namespace core
}  // namespace pyserver
