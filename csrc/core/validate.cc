#include "core/validate.h"

#include <string>

#include "core/framing.h"

namespace pyserver {
namespace core {
namespace {

std::string InputPrefix(const TensorSpec& spec) { return "input '" + spec.name + "': "; }

// The shape the model accepts, for messages: "[-1, 3, 4]" with the batch dimension as -1.
std::string ExpectedShape(const ModelSpec& model, const TensorSpec& spec) {
  Shape expected;
  if (model.batching()) expected.push_back(-1);
  expected.insert(expected.end(), spec.dims.begin(), spec.dims.end());
  return ShapeToString(expected);
}

Status ValidateInput(const ModelSpec& model, const TensorSpec& spec, const InputData& input,
                     int64_t* rows) {
  const Shape& shape = input.shape;
  const size_t batch_dims = model.batching() ? 1 : 0;
  if (shape.size() != spec.dims.size() + batch_dims) {
    return Status::InvalidArgument(InputPrefix(spec) + "shape " + ShapeToString(shape) +
                                   " does not match the model's " +
                                   ExpectedShape(model, spec) +
                                   (model.batching() ? " (batch dimension first)" : ""));
  }
  for (int64_t dim : shape) {
    if (dim < 0) {
      return Status::InvalidArgument(InputPrefix(spec) + "shape " + ShapeToString(shape) +
                                     " has a negative dimension");
    }
  }
  for (size_t k = 0; k < spec.dims.size(); ++k) {
    if (spec.dims[k] != -1 && spec.dims[k] != shape[k + batch_dims]) {
      return Status::InvalidArgument(InputPrefix(spec) + "shape " + ShapeToString(shape) +
                                     " does not match the model's " +
                                     ExpectedShape(model, spec) + " at dimension " +
                                     std::to_string(k + batch_dims));
    }
  }
  if (model.batching()) {
    const int64_t batch = shape[0];
    if (batch < 1 || batch > model.max_batch_size) {
      return Status::InvalidArgument(InputPrefix(spec) + "batch size " + std::to_string(batch) +
                                     " is outside 1.." + std::to_string(model.max_batch_size) +
                                     " (max_batch_size)");
    }
    if (*rows >= 0 && batch != *rows) {
      return Status::InvalidArgument(InputPrefix(spec) + "batch size " + std::to_string(batch) +
                                     " differs from the other inputs' " + std::to_string(*rows));
    }
    *rows = batch;
  }

  int64_t elements;
  if (!ElementCount(shape, 0, &elements)) {
    return Status::InvalidArgument(InputPrefix(spec) + "shape " + ShapeToString(shape) +
                                   " is too large");
  }
  if (spec.dtype == DataType::kBytes) {
    Status framing = CheckFraming(input.data, input.bytes, elements);
    if (!framing.ok()) return Status::InvalidArgument(InputPrefix(spec) + framing.message());
    return Status::Ok();
  }
  int64_t expected_bytes;
  if (__builtin_mul_overflow(elements, static_cast<int64_t>(ElementSize(spec.dtype)),
                             &expected_bytes)) {
    return Status::InvalidArgument(InputPrefix(spec) + "shape " + ShapeToString(shape) +
                                   " is too large");
  }
  if (static_cast<uint64_t>(expected_bytes) != input.bytes) {
    return Status::InvalidArgument(InputPrefix(spec) + "got " + std::to_string(input.bytes) +
                                   " bytes; shape " + ShapeToString(shape) + " of " +
                                   DataTypeName(spec.dtype) + " needs " +
                                   std::to_string(expected_bytes));
  }
  return Status::Ok();
}

}  // namespace

Status ValidateRequest(const ModelSpec& model, Request* request) {
  if (request->inputs.size() != model.inputs.size()) {
    return Status::InvalidArgument("model '" + model.name + "' expects " +
                                   std::to_string(model.inputs.size()) + " inputs, got " +
                                   std::to_string(request->inputs.size()));
  }
  int64_t rows = -1;  // the batch dimension, once the first input has set it
  for (size_t i = 0; i < model.inputs.size(); ++i) {
    Status status = ValidateInput(model, model.inputs[i], request->inputs[i], &rows);
    if (!status.ok()) return status;
  }
  request->rows = rows > 0 ? rows : 1;
  return Status::Ok();
}

}  // namespace core
}  // namespace pyserver
