// The scheduler used from several threads at once, on the real clock: what scheduler_test.cc
// (deterministic, one thread submitting) cannot reach, and what ThreadSanitizer needs to see.
// Submitters, a canceller and a statistics reader run against a scheduler whose identity
// instances execute concurrently, with priorities, queue timeouts (both actions), ordering and
// the latency target; then Stop() races submitters.
//
// The invariants checked are the ones the server relies on: every request that was submitted
// gets exactly one completion, an OK one holds exactly its own rows, the statistics add up,
// and with preserve_ordering completions leave in submission order.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/identity_engine.h"
#include "core/scheduler.h"
#include "tests/check.h"
#include "tests/core_support.h"

namespace pyserver {
namespace core {
namespace {

constexpr int64_t kWidth = 2;

// A model "m" with one INT64 input [kWidth] echoed by `instances` identity engines, each batch
// taking `delay_us`.
SchedulerOptions Options(int64_t max_batch_size) {
  SchedulerOptions options;
  options.model.name = "m";
  options.model.max_batch_size = max_batch_size;
  options.model.inputs = {TensorSpec{"x", DataType::kInt64, {kWidth}}};
  options.model.outputs = {TensorSpec{"y", DataType::kInt64, {kWidth}}};
  return options;
}

std::vector<std::shared_ptr<Engine>> Identities(size_t instances, int64_t delay_us) {
  std::vector<std::shared_ptr<Engine>> engines;
  IdentityEngineOptions options;
  options.execute_delay_us = delay_us;
  for (size_t i = 0; i < instances; ++i) engines.push_back(std::make_shared<IdentityEngine>(options));
  return engines;
}

// Requests' memory, per submitter: allocated before the request goes in, freed only when the
// test ends (after Stop), as the Python side keeps buffers until completions are drained.
struct Inputs {
  std::mutex mu;
  std::map<uint64_t, std::vector<int64_t>> data;  // node-based: never moves

  const std::vector<int64_t>& Make(uint64_t id, int64_t rows) {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<int64_t>& d = data[id];
    d.assign(static_cast<size_t>(rows * kWidth), static_cast<int64_t>(id));
    return d;
  }
  std::vector<int64_t> Get(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = data.find(id);
    return it == data.end() ? std::vector<int64_t>() : it->second;
  }
};

std::unique_ptr<Request> MakeRequest(Inputs* inputs, uint64_t id, int64_t rows,
                                     uint64_t priority = 0, uint64_t timeout_us = 0) {
  const std::vector<int64_t>& d = inputs->Make(id, rows);
  auto request = std::make_unique<Request>();
  request->id = id;
  request->priority = priority;
  request->timeout_us = timeout_us;
  InputData input;
  input.data = reinterpret_cast<const uint8_t*>(d.data());
  input.bytes = d.size() * sizeof(int64_t);
  input.shape = {rows, kWidth};
  request->inputs.push_back(std::move(input));
  return request;
}

// What the reader saw: completions per id, in arrival order, and the first problem.
struct Received {
  std::vector<uint64_t> order;
  std::map<uint64_t, int> count;
  std::map<StatusCode, uint64_t> by_code;
  std::string problem;

  void Check(const Completion& c, Inputs* inputs) {
    order.push_back(c.request_id);
    ++by_code[c.status.code()];
    if (++count[c.request_id] > 1 && problem.empty()) {
      problem = "request " + std::to_string(c.request_id) + " completed twice";
    }
    if (!c.status.ok()) return;
    const std::vector<int64_t> sent = inputs->Get(c.request_id);
    const OutputView& view = c.outputs.at(0);
    if (view.bytes != sent.size() * sizeof(int64_t) ||
        std::memcmp(view.owner->data() + view.offset, sent.data(), view.bytes) != 0) {
      if (problem.empty()) problem = "request " + std::to_string(c.request_id) + ": other rows";
    }
  }
};

// Drains `queue` until `expected` completions or kWait without one.
void Receive(CompletionQueue& queue, size_t expected, Inputs* inputs, Received* received) {
  while (received->order.size() < expected) {
    std::vector<Completion> got = WaitCompletions(queue, 1);
    if (got.empty()) return;  // nothing for kWait: the caller reports what is missing
    for (const Completion& c : got) received->Check(c, inputs);
  }
}

// ---- 1. Everything at once ----------------------------------------------------------------------

// Three submitters (priorities, timeouts, rows of 1-3), a canceller, a statistics reader and the
// event loop's reader, over three instances with two priority levels (level 2's timeouts
// DELAY, level 1's REJECT) and a queue delay.
TEST_CASE(SubmittersCancellerAndReaderRunTogether) {
  SchedulerOptions options = Options(8);
  options.max_queue_delay_us = 200;
  options.preferred_batch_sizes = {4, 8};
  options.priority_levels = 2;
  options.default_priority_level = 2;
  options.default_queue_policy.allow_timeout_override = true;
  options.default_queue_policy.delay_on_timeout = true;
  QueuePolicy urgent;
  urgent.allow_timeout_override = true;
  urgent.max_queue_size = 64;
  options.priority_queue_policy[1] = urgent;
  std::shared_ptr<CompletionQueue> queue;
  std::unique_ptr<Scheduler> scheduler;
  Status status = CompletionQueue::Create(&queue);
  if (status.ok()) status = Scheduler::Create(options, Identities(3, 50), queue, &scheduler);
  CHECK_MSG(status.ok(), status.message());

  constexpr int kSubmitters = 3;
  constexpr uint64_t kPerSubmitter = 1500;
  Inputs inputs;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> cancelled{0};
  std::vector<std::thread> threads;
  for (int s = 0; s < kSubmitters; ++s) {
    threads.emplace_back([&, s] {
      std::mt19937 random(static_cast<unsigned>(s));
      for (uint64_t k = 0; k < kPerSubmitter; ++k) {
        const uint64_t id = (static_cast<uint64_t>(s) << 32) | k;
        const uint64_t priority = random() % 3;               // 0 = the default level
        const uint64_t timeout_us = random() % 4 == 0 ? 100 : 0;  // some time out
        scheduler->Submit(MakeRequest(&inputs, id, 1 + random() % 3, priority, timeout_us));
        if (random() % 64 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
      }
    });
  }
  threads.emplace_back([&] {  // the client that goes away
    std::mt19937 random(99);
    while (!done.load()) {
      const uint64_t id = (static_cast<uint64_t>(random() % kSubmitters) << 32) |
                          (random() % kPerSubmitter);
      if (scheduler->Cancel(id)) cancelled.fetch_add(1);
      std::this_thread::yield();
    }
  });
  threads.emplace_back([&] {  // /metrics and /stats
    while (!done.load()) {
      StatsSnapshot s = scheduler->stats().Snapshot();
      (void)s;
      (void)scheduler->QueueFull();
      (void)scheduler->Queued();
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });

  Received received;
  Receive(*queue, kSubmitters * kPerSubmitter, &inputs, &received);
  done = true;
  for (std::thread& t : threads) t.join();
  scheduler->Stop();
  for (const Completion& c : queue->Drain()) received.Check(c, &inputs);

  CHECK_MSG(received.problem.empty(), received.problem);
  CHECK_EQ(received.order.size(), size_t{kSubmitters * kPerSubmitter});
  CHECK_EQ(received.count.size(), size_t{kSubmitters * kPerSubmitter});
  CHECK_EQ(received.by_code[StatusCode::kCancelled], cancelled.load());
  CHECK(received.by_code[StatusCode::kOk] > 0);
  const StatsSnapshot s = scheduler->stats().Snapshot();
  CHECK_EQ(s.success.count, received.by_code[StatusCode::kOk]);
  CHECK_EQ(s.success.count + s.fail.count, uint64_t{kSubmitters * kPerSubmitter});
  CHECK_EQ(s.fail_by_reason[static_cast<size_t>(FailureReason::kCanceled)], cancelled.load());
  CHECK_EQ(s.pending, int64_t{0});
}

// ---- 2. Order ---------------------------------------------------------------------------------------

// preserve_ordering over four instances whose batches finish out of order (each takes its own
// time), with cancellations in the middle: completions leave in submission order all the same.
TEST_CASE(PreserveOrderingHoldsAcrossInstancesAndCancellations) {
  SchedulerOptions options = Options(4);
  options.max_queue_delay_us = 100;
  options.preserve_ordering = true;
  std::vector<std::shared_ptr<Engine>> engines;
  for (int64_t delay_us : {0, 300, 50, 1000}) {
    IdentityEngineOptions o;
    o.execute_delay_us = delay_us;
    engines.push_back(std::make_shared<IdentityEngine>(o));
  }
  std::shared_ptr<CompletionQueue> queue;
  std::unique_ptr<Scheduler> scheduler;
  Status status = CompletionQueue::Create(&queue);
  if (status.ok()) status = Scheduler::Create(options, engines, queue, &scheduler);
  CHECK_MSG(status.ok(), status.message());

  constexpr uint64_t kRequests = 3000;
  Inputs inputs;
  std::atomic<uint64_t> submitted{0};
  std::thread submitter([&] {
    std::mt19937 random(7);
    for (uint64_t id = 1; id <= kRequests; ++id) {
      scheduler->Submit(MakeRequest(&inputs, id, 1 + random() % 2));
      submitted.store(id);
      if (id % 16 == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  std::thread canceller([&] {
    std::mt19937 random(8);
    while (submitted.load() < kRequests) {
      const uint64_t last = submitted.load();
      if (last > 0) scheduler->Cancel(last - random() % std::min<uint64_t>(last, 8));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  Received received;
  Receive(*queue, kRequests, &inputs, &received);
  submitter.join();
  canceller.join();
  scheduler->Stop();
  CHECK_MSG(received.problem.empty(), received.problem);
  CHECK_EQ(received.order.size(), size_t{kRequests});
  bool ordered = true;
  for (size_t i = 0; i < received.order.size(); ++i) ordered = ordered && received.order[i] == i + 1;
  CHECK_MSG(ordered, "completions left out of submission order");
}

// ---- 3. The latency target on the real clock -------------------------------------------------------

TEST_CASE(LatencyTargetUnderConcurrentLoad) {
  SchedulerOptions options = Options(16);
  options.latency_target_us = 2000;
  std::shared_ptr<CompletionQueue> queue;
  std::unique_ptr<Scheduler> scheduler;
  Status status = CompletionQueue::Create(&queue);
  if (status.ok()) status = Scheduler::Create(options, Identities(2, 100), queue, &scheduler);
  CHECK_MSG(status.ok(), status.message());

  constexpr int kSubmitters = 2;
  constexpr uint64_t kPerSubmitter = 1500;
  Inputs inputs;
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int s = 0; s < kSubmitters; ++s) {
    threads.emplace_back([&, s] {
      std::mt19937 random(static_cast<unsigned>(s + 10));
      for (uint64_t k = 0; k < kPerSubmitter; ++k) {
        scheduler->Submit(MakeRequest(&inputs, (uint64_t{1} << 32) * s + k, 1 + random() % 4));
        if (random() % 8 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
      }
    });
  }
  threads.emplace_back([&] {
    while (!done.load()) {
      (void)scheduler->LatencyBatchLimit();
      (void)scheduler->EstimatedExecutionUs(8);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  Received received;
  Receive(*queue, kSubmitters * kPerSubmitter, &inputs, &received);
  done = true;
  for (std::thread& t : threads) t.join();
  scheduler->Stop();
  CHECK_MSG(received.problem.empty(), received.problem);
  CHECK_EQ(received.by_code[StatusCode::kOk], uint64_t{kSubmitters * kPerSubmitter});
  CHECK(scheduler->EstimatedExecutionUs(1) > 0);
}

// ---- 4. Stop -----------------------------------------------------------------------------------------

// Stop() while submitters are still submitting: every request gets exactly one answer (OK, or
// UNAVAILABLE: queued when the stop came, or submitted after it), none after Stop() returns but
// the refusals of late submits.
TEST_CASE(StopWhileSubmitting) {
  for (int round = 0; round < 5; ++round) {
    SchedulerOptions options = Options(8);
    options.max_queue_delay_us = 500;
    std::shared_ptr<CompletionQueue> queue;
    std::unique_ptr<Scheduler> scheduler;
    Status status = CompletionQueue::Create(&queue);
    if (status.ok()) status = Scheduler::Create(options, Identities(2, 200), queue, &scheduler);
    CHECK_MSG(status.ok(), status.message());

    Inputs inputs;
    std::atomic<bool> stop_submitting{false};
    std::atomic<uint64_t> submitted{0};
    std::vector<std::thread> submitters;
    for (int s = 0; s < 2; ++s) {
      submitters.emplace_back([&, s] {
        for (uint64_t k = 0; !stop_submitting.load(); ++k) {
          scheduler->Submit(MakeRequest(&inputs, (uint64_t{1} << 32) * s + k, 1));
          submitted.fetch_add(1);
          if (k % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
      });
    }
    while (submitted.load() < 200) std::this_thread::yield();
    std::thread stopper([&] { scheduler->Stop(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(2));  // submits race the stop
    stop_submitting = true;
    for (std::thread& t : submitters) t.join();
    stopper.join();

    Received received;
    for (const Completion& c : queue->Drain()) received.Check(c, &inputs);
    CHECK_MSG(received.problem.empty(), received.problem);
    CHECK_EQ(received.order.size(), submitted.load());
    CHECK_EQ(received.by_code[StatusCode::kOk] + received.by_code[StatusCode::kUnavailable],
             submitted.load());
    CHECK_EQ(scheduler->stats().Snapshot().pending, int64_t{0});
  }
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
