// Scheduler: the request queue and the dynamic batcher of one model version.
//
// submit (any thread) -> validate -> queue_ -> batcher thread forms a batch -> a free Instance.
//
// Batching follows Triton's dynamic batcher. The candidate batch is the oldest request plus the
// later requests, in queue order, whose non-batch dims equal the oldest's for every input
// (others are skipped and stay queued), while the rows fit in max_batch_size. With an instance
// free, the batcher dispatches when
//   - the candidate is full: its rows reach max_batch_size, or the next compatible request
//     does not fit;
//   - a prefix of the candidate has rows equal to a preferred batch size (the longest such
//     prefix goes; with no preferred sizes, max_batch_size is the one preferred size);
//   - the oldest request has waited max_queue_delay_us (the whole candidate goes; 0 = at once).
// Otherwise it sleeps until the oldest request's deadline or until something changes. With no
// instance free nothing is dispatched: the pending batch keeps growing until one frees.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/completion_queue.h"
#include "core/engine.h"
#include "core/instance.h"
#include "core/model_spec.h"
#include "core/request.h"
#include "core/stats.h"
#include "core/status.h"

namespace pyserver {
namespace core {

struct SchedulerOptions {
  ModelSpec model;
  std::vector<int64_t> preferred_batch_sizes;  // each in 1..max_batch_size; empty = {max}
  int64_t max_queue_delay_us = 0;
  // false: Triton's default scheduler for a model with no dynamic_batching: each request runs
  // as its own batch (it may still carry several rows).
  bool dynamic_batching = true;
  bool manual_clock = false;  // test hook: time moves only through AdvanceClock
};

class Scheduler final : public InstanceListener {
 public:
  // The largest max_batch_size accepted (per-size statistics are preallocated).
  static constexpr int64_t kMaxBatchSizeLimit = 65536;

  // Checks the options, then starts one worker per engine and the batcher thread.
  static Status Create(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
                       std::shared_ptr<CompletionQueue> completions,
                       std::unique_ptr<Scheduler>* scheduler);

  ~Scheduler() override;  // Stop(): blocks until the threads have joined
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates and queues a request. Never fails to the caller: a bad request, or any request
  // after Stop(), gets an error completion instead. Takes mu_ briefly.
  void Submit(std::unique_ptr<Request> request);

  // Pushes an error completion for a request the caller could not even read (counted as a
  // failure).
  void Reject(uint64_t request_id, Status status);

  // Fails every queued request with UNAVAILABLE, lets assigned and running batches finish,
  // joins the batcher and the workers. Idempotent; blocks.
  void Stop();

  // Test hooks. Hold: form no batch while fewer than `queued` requests are queued (0 releases).
  void Hold(size_t queued);
  // Manual clock only (INVALID_ARGUMENT otherwise): moves the clock and wakes the batcher.
  Status AdvanceClock(int64_t microseconds);

  Stats& stats() { return stats_; }
  const SchedulerOptions& options() const { return options_; }

  void OnInstanceIdle(Instance* instance) override;

 private:
  enum class State {
    kRunning,   // accepting requests
    kStopping,  // Stop() began: requests are refused, the threads are winding down
    kStopped,   // every thread has joined
  };

  // What the batcher decided about the head of the queue.
  struct Plan {
    bool dispatch = false;
    int64_t deadline_ns = 0;     // when !dispatch: the oldest request's queue-delay deadline
    std::vector<size_t> members;  // when dispatch: queue indices, ascending
  };

  Scheduler(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
            std::shared_ptr<CompletionQueue> completions);

  void BatcherLoop();
  // mu_ must be held; queue_ must not be empty.
  void PlanBatch(int64_t now_ns, Plan* plan) const;
  // mu_ must be held; plan.members are valid, ascending indices into queue_.
  std::unique_ptr<Batch> TakeBatch(const Plan& plan);
  // mu_ must be held. True when the batcher could act now (queue non-empty, an instance idle,
  // the hold satisfied): whoever changes one of those notifies cv_ if this becomes true.
  bool BatcherCanAct() const;
  // Pushes an error completion for one request that never reached the queue.
  void RejectRequest(const Request& request, Status status);

  const SchedulerOptions options_;
  std::unique_ptr<Clock> clock_;
  std::shared_ptr<CompletionQueue> completions_;
  Stats stats_;
  std::vector<std::shared_ptr<Engine>> engines_;
  std::vector<std::unique_ptr<Instance>> instances_;
  std::vector<bool> preferred_;  // preferred_[rows]: rows is a preferred batch size

  std::mutex mu_;  // guards everything below; never held while executing or pushing
  std::condition_variable cv_;  // the batcher waits here
  State state_ = State::kRunning;
  std::deque<std::unique_ptr<Request>> queue_;
  std::vector<Instance*> idle_;  // instances with no batch assigned or running
  size_t hold_ = 0;
  bool batcher_waiting_ = false;  // the batcher is (about to be) blocked on cv_
  // ... and its wait is for the oldest request's queue-delay deadline (it could act, but the
  // policy said wait): only a request that makes a batch dispatchable needs to wake it.
  bool batcher_awaits_deadline_ = false;

  std::mutex stop_mu_;  // serializes Stop() callers
  std::thread batcher_;
};

}  // namespace core
}  // namespace pyserver
