// The test harness of scheduler_test.cc: a gated engine, request builders and a Harness that
// keeps every request's input alive and checks every completion (see scheduler_test.cc's top).
#pragma once

#include <poll.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/engine.h"
#include "core/request.h"
#include "core/scheduler.h"
#include "core/stats.h"
#include "core/status.h"
#include "tests/check.h"
#include "tests/core_support.h"

namespace pyserver {
namespace core {

using ::pyserver::testing::Location;
using Ids = std::vector<uint64_t>;
using RealClock = std::chrono::steady_clock;

// The grace period of a check that nothing happens (ExpectQuiet).
constexpr std::chrono::milliseconds kQuiet(50);
// A queue delay that only AdvanceClock can pass.
constexpr int64_t kLongDelayUs = 1000000;
constexpr int64_t kWidth = 2;  // elements per row unless a test says otherwise

// Polls `done` until it holds or `bound` passes. For state that has no event to wait on (the
// latency estimator, which instance took a batch); everything with an event waits on it.
inline bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds bound = kWait) {
  const auto deadline = RealClock::now() + bound;
  while (!done()) {
    if (RealClock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// What an engine saw of one batch: the input's shape, and the requests its rows came from, in
// batch order.
struct RanBatch {
  Shape shape;
  Ids ids;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
};

// An echo engine (output 0 is input 0, zero copy, as IdentityEngine) that records each batch
// and, while gated, blocks in Execute until the test releases it. Release(n) lets n more batches
// finish, including batches that have not arrived yet; Open() lets everything through.
class GatedEngine final : public Engine {
 public:
  explicit GatedEngine(bool gated) : open_(!gated) {}

  Status Execute(const BatchInputs& inputs, BatchOutputs* outputs) override {
    std::function<void(int64_t)> on_execute;
    int64_t rows = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const size_t index = ran_.size();
      ran_.push_back(Decode(inputs[0]));
      rows = ran_.back().rows();
      ++running_;
      cv_.notify_all();  // a test may be waiting for this batch to start
      cv_.wait(lock, [&] { return open_ || permits_ > index; });
      --running_;
      on_execute = on_execute_;
    }
    // Outside our lock: the hook may take the scheduler's.
    if (on_execute) on_execute(rows);
    for (size_t i = 0; i < outputs->size(); ++i) {
      (*outputs)[i].dtype = inputs[i].dtype;
      (*outputs)[i].shape = inputs[i].shape;
      (*outputs)[i].buffer = inputs[i].buffer;
    }
    return Status::Ok();
  }

  void Release(size_t batches = 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      permits_ += batches;
    }
    cv_.notify_all();
  }

  void Open() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }

  // Until `batches` batches in all have entered Execute; false when kWait passes first.
  bool WaitEntered(size_t batches) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, kWait, [&] { return ran_.size() >= batches; });
  }

  size_t entered() {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_.size();
  }
  // Batches inside Execute now (started, not released).
  size_t running() {
    std::lock_guard<std::mutex> lock(mu_);
    return running_;
  }
  std::vector<RanBatch> batches() {
    std::lock_guard<std::mutex> lock(mu_);
    return ran_;
  }
  std::vector<Ids> batch_ids() {
    std::vector<Ids> ids;
    for (const RanBatch& batch : batches()) ids.push_back(batch.ids);
    return ids;
  }
  // Runs on the worker thread inside Execute, after the gate, with the batch's rows.
  void set_on_execute(std::function<void(int64_t rows)> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    on_execute_ = std::move(hook);
  }

 private:
  static RanBatch Decode(const BatchTensor& input) {
    RanBatch batch;
    batch.shape = input.shape;
    if (input.dtype != DataType::kInt64 || input.shape.size() != 2 || input.buffer == nullptr) {
      return batch;
    }
    const int64_t width = input.shape[1];
    for (int64_t row = 0; row < input.shape[0]; ++row) {
      int64_t id;
      std::memcpy(&id, input.buffer->data() + row * width * sizeof(id), sizeof(id));
      // A request's rows are contiguous in the batch: one id per request.
      if (batch.ids.empty() || batch.ids.back() != static_cast<uint64_t>(id)) {
        batch.ids.push_back(static_cast<uint64_t>(id));
      }
    }
    return batch;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RanBatch> ran_;
  size_t permits_ = 0;
  size_t running_ = 0;
  bool open_;
  std::function<void(int64_t)> on_execute_;
};

inline std::vector<std::shared_ptr<GatedEngine>> Gated(size_t count) {
  std::vector<std::shared_ptr<GatedEngine>> engines;
  for (size_t i = 0; i < count; ++i) engines.push_back(std::make_shared<GatedEngine>(true));
  return engines;
}

inline std::vector<std::shared_ptr<GatedEngine>> Ungated(size_t count = 1) {
  std::vector<std::shared_ptr<GatedEngine>> engines;
  for (size_t i = 0; i < count; ++i) engines.push_back(std::make_shared<GatedEngine>(false));
  return engines;
}

// A model "m" with one INT64 input and output of dims [dim] (-1: any width), on the manual clock.
inline SchedulerOptions Options(int64_t max_batch_size, int64_t max_queue_delay_us, int64_t dim = kWidth) {
  SchedulerOptions options;
  options.model.name = "m";
  options.model.max_batch_size = max_batch_size;
  options.model.inputs = {TensorSpec{"x", DataType::kInt64, {dim}}};
  options.model.outputs = {TensorSpec{"y", DataType::kInt64, {dim}}};
  options.max_queue_delay_us = max_queue_delay_us;
  options.manual_clock = true;
  return options;
}

struct Req {
  int64_t rows = 1;
  int64_t width = kWidth;
  uint64_t priority = 0;
  uint64_t timeout_us = 0;
};

inline Req Priority(uint64_t priority) {
  Req req;
  req.priority = priority;
  return req;
}

inline Req Rows(int64_t rows) {
  Req req;
  req.rows = rows;
  return req;
}

inline Req Width(int64_t width) {
  Req req;
  req.width = width;
  return req;
}

inline Req Timeout(uint64_t timeout_us) {
  Req req;
  req.timeout_us = timeout_us;
  return req;
}

inline Ids IdsOf(const std::vector<Completion>& completions) {
  Ids ids;
  for (const Completion& c : completions) ids.push_back(c.request_id);
  return ids;
}

inline std::vector<StatusCode> CodesOf(const std::vector<Completion>& completions) {
  std::vector<StatusCode> codes;
  for (const Completion& c : completions) codes.push_back(c.status.code());
  return codes;
}

// One scheduler with its completion queue and engines. Keeps every request's input memory alive
// until the scheduler has stopped, and counts the completions it has seen per request.
class Harness {
 public:
  Harness(SchedulerOptions options, std::vector<std::shared_ptr<GatedEngine>> engines,
          Location where = PYSERVER_CALLER)
      : engines_(std::move(engines)) {
    Status status = CompletionQueue::Create(&completions_);
    CHECK_MSG_AT(where, status.ok(), status.message());
    std::vector<std::shared_ptr<Engine>> base(engines_.begin(), engines_.end());
    status = Scheduler::Create(std::move(options), std::move(base), completions_, &scheduler_);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }

  // After a failed check: let blocked engines finish so that Stop() can join, then stop before
  // the input memory goes.
  ~Harness() {
    for (auto& engine : engines_) engine->Open();
    scheduler_.reset();
    if (completions_ != nullptr) completions_->Close();
  }

  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  Scheduler& scheduler() { return *scheduler_; }
  GatedEngine& engine(size_t i = 0) { return *engines_[i]; }

  // Submits a request; returns its id (1, 2, ... in submission order).
  uint64_t Submit(const Req& req = Req()) {
    const uint64_t id = next_id_++;
    Sent& sent = sent_[id];
    sent.req = req;
    sent.data.assign(static_cast<size_t>(req.rows * req.width), static_cast<int64_t>(id));
    auto request = std::make_unique<Request>();
    request->id = id;
    request->priority = req.priority;
    request->timeout_us = req.timeout_us;
    InputData input;
    input.data = reinterpret_cast<const uint8_t*>(sent.data.data());
    input.bytes = sent.data.size() * sizeof(int64_t);
    input.shape = {req.rows, req.width};
    request->inputs.push_back(std::move(input));
    scheduler_->Submit(std::move(request));
    return id;
  }

  void Advance(int64_t microseconds, Location where = PYSERVER_CALLER) {
    Status status = scheduler_->AdvanceClock(microseconds);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }

  // Exactly `n` more completions, in the order the queue gave them; fails when they do not come
  // within `bound`, or more come.
  std::vector<Completion> Wait(size_t n, std::chrono::milliseconds bound = kWait,
                               Location where = PYSERVER_CALLER) {
    std::vector<Completion> got = TryWait(n, bound, where);
    CHECK_MSG_AT(where, got.size() == n,
                 "expected " << n << " completions within " << bound.count() << " ms, got ids "
                             << ::pyserver::testing::Describe(IdsOf(got)));
    return got;
  }

  // Completions until there are at least `n` or `bound` passes: whatever came, in order.
  std::vector<Completion> TryWait(size_t n, std::chrono::milliseconds bound,
                                  Location where = PYSERVER_CALLER) {
    std::vector<Completion> got;
    const auto deadline = RealClock::now() + bound;
    while (got.size() < n) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - RealClock::now());
      if (left.count() <= 0) break;
      pollfd fd{completions_->fd(), POLLIN, 0};
      poll(&fd, 1, static_cast<int>(left.count()) + 1);
      for (Completion& c : completions_->Drain()) got.push_back(std::move(c));
    }
    Record(got, where);
    return got;
  }

  // Whatever completions are waiting now, without waiting.
  std::vector<Completion> DrainNow(Location where = PYSERVER_CALLER) {
    std::vector<Completion> got = completions_->Drain();
    Record(got, where);
    return got;
  }

  // Nothing completes and no engine starts a batch within the grace period.
  void ExpectQuiet(Location where = PYSERVER_CALLER) {
    std::vector<size_t> entered;
    for (auto& engine : engines_) entered.push_back(engine->entered());
    pollfd fd{completions_->fd(), POLLIN, 0};
    poll(&fd, 1, static_cast<int>(kQuiet.count()));
    std::vector<Completion> got = DrainNow(where);
    CHECK_MSG_AT(where, got.empty(),
                 "expected no completion, got " << ::pyserver::testing::Describe(IdsOf(got)));
    for (size_t i = 0; i < engines_.size(); ++i) {
      CHECK_MSG_AT(where, engines_[i]->entered() == entered[i],
                   "engine " << i << " started a batch");
    }
  }

  StatsSnapshot Stats() { return scheduler_->stats().Snapshot(); }
  uint64_t Failures(FailureReason reason) {
    return Stats().fail_by_reason[static_cast<size_t>(reason)];
  }

  // Stops the scheduler (gates open, so running batches finish) and checks that every submitted
  // request got exactly one completion. Returns the completions that came with the stop.
  std::vector<Completion> Finish(Location where = PYSERVER_CALLER) {
    for (auto& engine : engines_) engine->Open();
    scheduler_->Stop();  // joins every thread: after it, every completion has been pushed
    std::vector<Completion> last = DrainNow(where);
    for (const auto& entry : sent_) {
      CHECK_MSG_AT(where, entry.second.completions == 1,
                   "request " << entry.first << " got " << entry.second.completions
                              << " completions");
    }
    CHECK_EQ_AT(where, Stats().pending, int64_t{0});
    return last;
  }

 private:
  struct Sent {
    Req req;
    std::vector<int64_t> data;  // the input's memory, alive until the scheduler has stopped
    int completions = 0;
  };

  // Counts each completion against its request and checks that an OK one echoes its own rows.
  void Record(const std::vector<Completion>& got, Location where) {
    for (const Completion& c : got) {
      auto it = sent_.find(c.request_id);
      CHECK_MSG_AT(where, it != sent_.end(), "a completion for unknown id " << c.request_id);
      Sent& sent = it->second;
      ++sent.completions;
      CHECK_MSG_AT(where, sent.completions == 1, "request " << c.request_id << " completed twice");
      if (!c.status.ok()) {
        CHECK_MSG_AT(where, c.outputs.empty(), "a failed completion carries outputs");
        continue;
      }
      CHECK_MSG_AT(where, c.outputs.size() == 1, "request " << c.request_id << ": outputs");
      const OutputView& view = c.outputs[0];
      CHECK_EQ_AT(where, view.shape, (Shape{sent.req.rows, sent.req.width}));
      CHECK_EQ_AT(where, view.bytes, sent.data.size() * sizeof(int64_t));
      CHECK_AT(where, view.owner != nullptr && view.offset + view.bytes <= view.owner->size());
      CHECK_MSG_AT(where,
                   std::memcmp(view.owner->data() + view.offset, sent.data.data(), view.bytes) == 0,
                   "request " << c.request_id << " got rows that are not its own");
    }
  }

  std::vector<std::shared_ptr<GatedEngine>> engines_;
  std::shared_ptr<CompletionQueue> completions_;
  std::unique_ptr<Scheduler> scheduler_;
  std::map<uint64_t, Sent> sent_;  // node-based: the input memory never moves
  uint64_t next_id_ = 1;
};

}  // namespace core
}  // namespace pyserver
