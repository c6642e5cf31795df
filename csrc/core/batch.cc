#include "core/batch.h"

#include <cstring>
#include <string>
#include <utility>

#include "core/framing.h"

namespace pyserver {
namespace core {
namespace {

std::string OutputPrefix(const TensorSpec& spec) { return "output '" + spec.name + "': "; }

}  // namespace

Batch::Batch(std::vector<std::unique_ptr<Request>> requests) : requests_(std::move(requests)) {
  for (const auto& request : requests_) rows_ += request->rows;
}

Status Batch::Gather(const ModelSpec& model, Engine& engine, BatchInputs* inputs) const {
  inputs->resize(model.inputs.size());
  const Request& first = *requests_.front();
  for (size_t i = 0; i < model.inputs.size(); ++i) {
    size_t total = 0;
    for (const auto& request : requests_) total += request->inputs[i].bytes;

    std::shared_ptr<MutableBuffer> buffer = engine.AllocateInput(total);
    if (buffer == nullptr) {
      return Status::Internal("could not allocate " + std::to_string(total) +
                              " bytes for input '" + model.inputs[i].name + "'");
    }
    // Requests' rows back to back, in request order: scatter relies on the same order. BYTES
    // framings concatenate into one valid framing, so the same copy serves every datatype.
    uint8_t* out = buffer->mutable_data();
    for (const auto& request : requests_) {
      const InputData& in = request->inputs[i];
      if (in.bytes > 0) std::memcpy(out, in.data, in.bytes);
      out += in.bytes;
    }

    BatchTensor& tensor = (*inputs)[i];
    tensor.spec = &model.inputs[i];
    tensor.dtype = model.inputs[i].dtype;
    // Every request has the same non-batch dims, so the first one's shape with the batch's
    // rows is the batch's shape.
    tensor.shape = first.inputs[i].shape;
    if (model.batching()) tensor.shape[0] = rows_;
    tensor.buffer = std::move(buffer);
  }
  return Status::Ok();
}

void Batch::PrepareOutputs(const ModelSpec& model, BatchOutputs* outputs) const {
  outputs->resize(model.outputs.size());
  for (size_t j = 0; j < model.outputs.size(); ++j) {
    BatchTensor& slot = (*outputs)[j];  // may be a slot of an earlier batch: reset all of it
    slot.spec = &model.outputs[j];
    slot.dtype = model.outputs[j].dtype;
    slot.shape.clear();
    slot.buffer.reset();
  }
}

Status Batch::CheckOutput(const ModelSpec& model, const TensorSpec& spec,
                          const BatchTensor& output) const {
  if (output.buffer == nullptr) {
    return Status::Internal(OutputPrefix(spec) + "the engine produced no data");
  }
  if (output.dtype != spec.dtype) {
    return Status::Internal(OutputPrefix(spec) + "the engine produced " +
                            DataTypeName(output.dtype) + "; the model config says " +
                            DataTypeName(spec.dtype));
  }
  if (model.batching() && (output.shape.empty() || output.shape[0] != rows_)) {
    return Status::Internal(OutputPrefix(spec) + "the engine returned shape " +
                            ShapeToString(output.shape) + " for a batch of " +
                            std::to_string(rows_) + " rows; the first dimension must be " +
                            std::to_string(rows_));
  }
  int64_t elements;
  if (!ElementCount(output.shape, 0, &elements)) {
    return Status::Internal(OutputPrefix(spec) + "the engine returned an invalid shape " +
                            ShapeToString(output.shape));
  }
  const size_t size = output.buffer->size();
  if (spec.dtype == DataType::kBytes) {
    Status framing = CheckFraming(output.buffer->data(), size, elements);
    if (!framing.ok()) return Status::Internal(OutputPrefix(spec) + framing.message());
  } else if (uint64_t bytes;
             __builtin_mul_overflow(static_cast<uint64_t>(elements),
                                    static_cast<uint64_t>(ElementSize(spec.dtype)), &bytes) ||
             bytes != size) {
    return Status::Internal(OutputPrefix(spec) + "the engine returned " + std::to_string(size) +
                            " bytes for shape " + ShapeToString(output.shape) + " of " +
                            DataTypeName(spec.dtype));
  }
  return Status::Ok();
}

Status Batch::Scatter(const ModelSpec& model, const BatchOutputs& outputs,
                      std::vector<Completion>* completions) const {
  if (outputs.size() != model.outputs.size()) {
    return Status::Internal("the engine returned " + std::to_string(outputs.size()) +
                            " outputs; the model config has " +
                            std::to_string(model.outputs.size()));
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    Status status = CheckOutput(model, model.outputs[j], outputs[j]);
    if (!status.ok()) return status;
  }

  const size_t first = completions->size();
  completions->resize(first + requests_.size());
  for (size_t r = 0; r < requests_.size(); ++r) {
    Completion& completion = (*completions)[first + r];
    completion.request_id = requests_[r]->id;
    completion.outputs.resize(outputs.size());
  }

  for (size_t j = 0; j < outputs.size(); ++j) {
    const BatchTensor& output = outputs[j];
    const size_t size = output.buffer->size();

    if (!model.batching()) {
      // One request, and it gets the whole output.
      OutputView& view = (*completions)[first].outputs[j];
      view.owner = output.buffer;
      view.offset = 0;
      view.bytes = size;
      view.shape = output.shape;
      continue;
    }

    // Row r of the output starts where the rows before it end. Fixed-size: every row has the
    // same byte size. BYTES: every row has the same element count, and the framing says where
    // each element ends.
    const bool framed = model.outputs[j].dtype == DataType::kBytes;
    const size_t row_bytes = rows_ > 0 ? size / static_cast<size_t>(rows_) : 0;
    int64_t elements = 0;
    ElementCount(output.shape, 0, &elements);  // checked in CheckOutput
    const int64_t elements_per_row = rows_ > 0 ? elements / rows_ : 0;
    const uint8_t* data = output.buffer->data();

    size_t offset = 0;
    for (size_t r = 0; r < requests_.size(); ++r) {
      const int64_t n = requests_[r]->rows;
      size_t end = offset;
      if (framed) {
        SkipFramedElements(data, size, n * elements_per_row, &end);  // framing checked above
      } else {
        end = offset + static_cast<size_t>(n) * row_bytes;
      }
      OutputView& view = (*completions)[first + r].outputs[j];
      view.owner = output.buffer;
      view.offset = offset;
      view.bytes = end - offset;
      view.shape = output.shape;
      view.shape[0] = n;
      offset = end;
    }
  }
  return Status::Ok();
}

}  // namespace core
}  // namespace pyserver
