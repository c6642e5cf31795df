// Tests of the identity engine (core/identity_engine.h) alone and under a scheduler: every
// datatype round-trips byte for byte (BYTES by its length framing), outputs are the gathered
// input buffer itself (zero copy) and outlive the scheduler, and BYTES framing that is broken
// is refused before any engine runs.
//
// Every request's input lives in a std::vector of exactly its size, so that a read past the end
// of a client's data is a heap overflow the address sanitizer sees.

#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/framing.h"
#include "core/identity_engine.h"
#include "core/scheduler.h"
#include "tests/check.h"
#include "tests/core_support.h"

namespace pyserver {
namespace core {
namespace {

using Bytes = std::vector<uint8_t>;
constexpr int64_t kLongDelayUs = 1000000;  // only a full batch dispatches
constexpr int64_t kWidth = 3;

Bytes Frame(const std::vector<std::string>& items) {
  Bytes out;
  for (const std::string& item : items) {
    uint8_t header[kFramingHeaderBytes];
    WriteFramedLength(header, static_cast<uint32_t>(item.size()));
    out.insert(out.end(), header, header + kFramingHeaderBytes);
    out.insert(out.end(), item.begin(), item.end());
  }
  return out;
}

// `rows` x kWidth elements of `dtype`, random: BYTES elements of 0..8 random bytes (one with
// zero bytes inside), BOOL as 0/1, every other type as random bytes.
Bytes RandomRows(DataType dtype, int64_t rows, std::mt19937* random) {
  const size_t elements = static_cast<size_t>(rows * kWidth);
  if (dtype == DataType::kBytes) {
    std::vector<std::string> items;
    for (size_t i = 0; i < elements; ++i) {
      std::string item((*random)() % 9, '\0');
      for (char& c : item) c = static_cast<char>((*random)() & 0xff);
      items.push_back(item);
    }
    items[0] = std::string("\0trailing\0", 10);
    return Frame(items);
  }
  Bytes out(elements * ElementSize(dtype));
  for (uint8_t& b : out) b = static_cast<uint8_t>((*random)() & 0xff);
  if (dtype == DataType::kBool) {
    for (uint8_t& b : out) b &= 1;
  }
  return out;
}

// A scheduler over one identity engine with its completion queue, on the manual clock. Keeps
// every request's input alive until it is destroyed (after the scheduler).
class IdentityModel {
 public:
  IdentityModel(DataType dtype, int64_t max_batch_size, Shape dims = {kWidth},
                testing::Location where = PYSERVER_CALLER)
      : engine_(std::make_shared<IdentityEngine>(IdentityEngineOptions{})) {
    SchedulerOptions options;
    options.model.name = "m";
    options.model.max_batch_size = max_batch_size;
    options.model.inputs = {TensorSpec{"x", dtype, dims}};
    options.model.outputs = {TensorSpec{"y", dtype, dims}};
    options.max_queue_delay_us = kLongDelayUs;
    options.manual_clock = true;
    Status status = CompletionQueue::Create(&queue_);
    if (status.ok()) status = Scheduler::Create(options, {engine_}, queue_, &scheduler_);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }
  ~IdentityModel() { Stop(); }

  void Submit(uint64_t id, Shape shape, Bytes data) {
    inputs_.push_back(std::move(data));
    const Bytes& kept = inputs_.back();
    auto request = std::make_unique<Request>();
    request->id = id;
    InputData input;
    input.data = kept.empty() ? nullptr : kept.data();
    input.bytes = kept.size();
    input.shape = std::move(shape);
    request->inputs.push_back(std::move(input));
    scheduler_->Submit(std::move(request));
  }

  std::vector<Completion> Wait(size_t n, testing::Location where = PYSERVER_CALLER) {
    std::vector<Completion> got = WaitCompletions(*queue_, n);
    CHECK_MSG_AT(where, got.size() == n,
                 "expected " << n << " completions, got " << got.size());
    return got;
  }

  // Stops the scheduler and closes the queue; the inputs stay until the model goes.
  void Stop() {
    if (scheduler_ != nullptr) scheduler_->Stop();
    scheduler_.reset();
    if (queue_ != nullptr) queue_->Close();
  }

  Scheduler& scheduler() { return *scheduler_; }
  IdentityEngine& engine() { return *engine_; }

 private:
  std::shared_ptr<IdentityEngine> engine_;
  std::shared_ptr<CompletionQueue> queue_;
  std::unique_ptr<Scheduler> scheduler_;
  std::deque<Bytes> inputs_;  // never moves an element
};

Bytes ViewBytes(const OutputView& view) {
  const uint8_t* start = view.owner->data() + view.offset;
  return Bytes(start, start + view.bytes);
}

// ---- 1. Alone ---------------------------------------------------------------------------------

TEST_CASE(IdentityOutputsAreItsInputBuffers) {
  IdentityEngine engine(IdentityEngineOptions{});
  TensorSpec x{"x", DataType::kInt32, {2}};
  TensorSpec s{"s", DataType::kBytes, {1}};
  BatchInputs inputs(2);
  inputs[0].spec = &x;
  inputs[0].dtype = DataType::kInt32;
  inputs[0].shape = {3, 2};
  inputs[0].buffer = AlignedBuffer::Create(3 * 2 * 4);
  inputs[1].spec = &s;
  inputs[1].dtype = DataType::kBytes;
  inputs[1].shape = {3, 1};
  inputs[1].buffer = AlignedBuffer::Create(3 * 4);
  BatchOutputs outputs(2);
  CHECK(engine.Execute(inputs, &outputs).ok());
  for (size_t i = 0; i < 2; ++i) {
    CHECK(outputs[i].buffer == inputs[i].buffer);  // the same memory: zero copy
    CHECK_EQ(outputs[i].dtype, inputs[i].dtype);
    CHECK_EQ(outputs[i].shape, inputs[i].shape);
  }
  CHECK_EQ(engine.executions(), uint64_t{1});
  CHECK_EQ(engine.rows(), uint64_t{3});

  BatchOutputs fewer(1);  // fewer outputs than inputs: the first are echoed
  CHECK(engine.Execute(inputs, &fewer).ok());
  CHECK(fewer[0].buffer == inputs[0].buffer);
  CHECK_EQ(engine.executions(), uint64_t{2});
  CHECK_EQ(engine.rows(), uint64_t{6});
}

TEST_CASE(IdentityNeedsAnInputPerOutput) {
  IdentityEngine engine(IdentityEngineOptions{});
  BatchInputs inputs(1);
  inputs[0].dtype = DataType::kFp32;
  inputs[0].shape = {1, 4};
  inputs[0].buffer = AlignedBuffer::Create(16);
  BatchOutputs outputs(2);
  Status status = engine.Execute(inputs, &outputs);
  CHECK_EQ(status.code(), StatusCode::kInternal);
  CHECK_EQ(status.message(),
           std::string("identity engine: the model has 2 outputs but only 1 inputs to echo"));
  CHECK(outputs[0].buffer == nullptr && outputs[1].buffer == nullptr);
}

TEST_CASE(IdentityExecuteDelay) {
  IdentityEngineOptions options;
  options.execute_delay_us = 20000;
  IdentityEngine engine(options);
  BatchInputs inputs;
  BatchOutputs outputs;
  const auto start = std::chrono::steady_clock::now();
  CHECK(engine.Execute(inputs, &outputs).ok());
  CHECK(std::chrono::steady_clock::now() - start >= std::chrono::microseconds(20000));
}

// ---- 2. Under a scheduler -----------------------------------------------------------------------

// Rows 1 + 2 + 1 fill a batch of 4: one batch, gathered into one buffer, echoed, and scattered
// back to each request as its own bytes (BYTES: split where the framing says).
TEST_CASE(IdentityRoundTripsEveryDatatype) {
  for (int code = 1; code <= static_cast<int>(DataType::kBf16); ++code) {
    const DataType dtype = static_cast<DataType>(code);
    std::mt19937 random(static_cast<unsigned>(code));
    IdentityModel model(dtype, 4);
    std::vector<std::pair<int64_t, Bytes>> sent;
    for (int64_t rows : {1, 2, 1}) {
      Bytes data = RandomRows(dtype, rows, &random);
      sent.emplace_back(rows, data);
      model.Submit(sent.size(), {rows, kWidth}, std::move(data));
    }
    std::vector<Completion> done = model.Wait(3);
    CHECK_EQ(model.scheduler().stats().BatchSizes(), (std::vector<int64_t>{4}));
    const Buffer* owner = nullptr;
    for (const Completion& c : done) {
      CHECK_MSG(c.status.ok(), DataTypeName(dtype) << ": " << c.status.message());
      CHECK_EQ(c.outputs.size(), size_t{1});
      const OutputView& view = c.outputs[0];
      const auto& [rows, data] = sent.at(c.request_id - 1);
      CHECK_EQ(view.shape, (Shape{rows, kWidth}));
      CHECK_MSG(ViewBytes(view) == data, DataTypeName(dtype) << ": request " << c.request_id
                                                             << " got other bytes");
      // One batch, one buffer: every request's view is a slice of the same gathered input.
      if (owner == nullptr) owner = view.owner.get();
      CHECK(view.owner.get() == owner);
      CHECK(view.offset + view.bytes <= view.owner->size());
    }
    CHECK_EQ(model.engine().executions(), uint64_t{1});
    CHECK_EQ(model.engine().rows(), uint64_t{4});
  }
}

TEST_CASE(IdentityViewsOutliveTheScheduler) {
  std::vector<Completion> done;
  std::vector<Bytes> sent;
  {
    IdentityModel model(DataType::kBytes, 2);
    for (uint64_t id = 1; id <= 2; ++id) {
      sent.push_back(Frame({"request", std::to_string(id), std::string(100, 'x')}));
      model.Submit(id, {1, kWidth}, sent.back());
    }
    done = model.Wait(2);
  }  // the scheduler, its engine, the queue and the requests' inputs are gone
  for (const Completion& c : done) {
    CHECK(c.status.ok());
    CHECK(ViewBytes(c.outputs[0]) == sent.at(c.request_id - 1));
  }
}

// A model without batching: each request is its own batch and gets the whole output.
TEST_CASE(IdentityWithoutBatching) {
  IdentityModel model(DataType::kBytes, 0, {2});
  const Bytes data = Frame({"", "abc"});
  model.Submit(1, {2}, data);
  std::vector<Completion> done = model.Wait(1);
  CHECK(done[0].status.ok());
  CHECK_EQ(done[0].outputs[0].shape, (Shape{2}));
  CHECK(ViewBytes(done[0].outputs[0]) == data);
}

// Tensors with no elements: nothing to copy, views of no bytes, for fixed-size and BYTES.
TEST_CASE(IdentityEmptyTensors) {
  for (DataType dtype : {DataType::kFp32, DataType::kBytes}) {
    IdentityModel model(dtype, 2, {-1});
    model.Submit(1, {1, 0}, Bytes());
    model.Submit(2, {1, 0}, Bytes());
    std::vector<Completion> done = model.Wait(2);
    for (const Completion& c : done) {
      CHECK_MSG(c.status.ok(), DataTypeName(dtype) << ": " << c.status.message());
      CHECK_EQ(c.outputs[0].shape, (Shape{1, 0}));
      CHECK_EQ(c.outputs[0].bytes, size_t{0});
    }
  }
}

// ---- 3. BYTES framing is checked before anything runs -------------------------------------------

TEST_CASE(BrokenBytesFramingNeverReachesTheEngine) {
  struct Case {
    const char* what;
    Bytes data;
    const char* message;
  };
  Bytes short_header = Frame({"ab", "cd"});
  short_header.push_back(0xff);  // the third header cut short
  Bytes huge(4, 0xff);          // one element claiming 4 GiB - 1
  Bytes past_end = Frame({"abc", "de", "f"});
  past_end.pop_back();          // the last element lacks its byte
  const std::vector<Case> cases = {
      {"no data", Bytes(), "BYTES data ends after 0 of 3 elements (0 bytes)"},
      {"a header cut short", Bytes{1, 0, 0}, "BYTES data ends after 0 of 3 elements (3 bytes)"},
      {"too few elements", Frame({"a", "b"}), "BYTES data ends after 2 of 3 elements"},
      {"an element past the end", past_end, "BYTES element 2 declares 1 bytes but only 0 remain"},
      {"a huge length", huge, "BYTES element 0 declares 4294967295 bytes but only 0 remain"},
      {"the last header cut short", short_header, "BYTES data ends after 2 of 3 elements"},
      {"extra bytes", Frame({"a", "b", "c", "d"}), "BYTES data has 5 bytes left over"},
  };
  IdentityModel model(DataType::kBytes, 4);
  uint64_t id = 0;
  for (const Case& c : cases) {
    model.Submit(++id, {1, kWidth}, c.data);
    std::vector<Completion> done = model.Wait(1);
    CHECK_MSG(done[0].status.code() == StatusCode::kInvalidArgument,
              c.what << ": " << done[0].status.code());
    CHECK_MSG(done[0].status.message().find(c.message) != std::string::npos,
              c.what << ": " << done[0].status.message());
    CHECK_CONTAINS(done[0].status.message(), "input 'x': ");
  }
  CHECK_EQ(model.engine().executions(), uint64_t{0});
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
