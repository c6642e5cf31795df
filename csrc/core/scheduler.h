// Scheduler: the request queue and the dynamic batcher of one model version.
//
// submit (any thread) -> validate -> RequestQueue (priority levels, timeouts, max size)
//   -> batcher thread forms a batch -> a free Instance -> completions, in arrival order when the
//   model preserves ordering (Sequencer).
//
// Batching follows Triton's dynamic batcher, with two changes Triton's users ask for.
//
// The queue is read in dispatch order (priority level, then arrival; RequestQueue). Requests are
// grouped by their dims beyond the batch dimension (every input): each group is a candidate
// batch of its requests in dispatch order while their rows fit (the limit is max_batch_size).
// Groups stand side by side: a request of another shape never closes a candidate batch, it
// starts or joins its own (Triton closes the pending batch instead, which turns mixed shapes
// into small batches). Groups are examined in the order of their first request; with an
// instance free, the first group that is ready is dispatched. So priority is strict within a
// shape, and across shapes it orders the groups examined: a ready group of lower priority may go
// ahead of a higher-priority group of another shape that is still waiting out its queue delay
// (rather than leave the instance idle meanwhile). A group is ready when
//   - it is full: its rows reach the limit, or its next request does not fit;
//   - a prefix of it has rows equal to a preferred batch size (the longest such prefix goes;
//     with no preferred sizes, max_batch_size is the one preferred size);
//   - its oldest request has waited max_queue_delay_us (the whole group goes; 0 = at once);
//     or, with a latency target, by the rule below.
// A full group goes whole, even when a shorter prefix of it is a preferred size. The batcher
// reads at most kPlanWindow requests per decision; when more are queued, every group counts as
// full.
// Otherwise the batcher sleeps until the earliest group deadline or queue timeout, or until
// something changes. With no instance free nothing is dispatched: the pending batches keep
// growing until one frees. Queue timeouts are applied whether or not an instance is free.
//
// Latency target (latency_target_us = T > 0; replaces max_queue_delay_us). Execution times per
// batch size and the arrival rate are measured as the model runs (LatencyEstimator). The rule:
//   - half of T is for execution: the limit is the largest batch size whose estimated
//     execution fits in T/2 (so a request that arrives as a batch starts waits at most T/2 for
//     the instance, then runs in at most T/2). When the request first in dispatch order has
//     already waited T, the target is lost and the limit is max_batch_size: under overload the
//     largest batches drain the queue fastest;
//   - the other half is for waiting: a group is ready once its oldest request has waited T/2,
//     and at once when the rows expected to arrive in the time left (rate x time) are fewer
//     than one: waiting would add latency and no batching.
// So under light load requests go alone at once, under more load batches grow as far as T/2 of
// execution allows, and a slower model (or a smaller T) shrinks them.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/clock.h"
#include "core/completion_queue.h"
#include "core/engine.h"
#include "core/instance.h"
#include "core/latency_estimator.h"
#include "core/model_spec.h"
#include "core/monitor.h"
#include "core/request.h"
#include "core/request_queue.h"
#include "core/sequencer.h"
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
  // Triton's priority_levels (0 = none: one level, request priorities ignored) and
  // default_priority_level (1..priority_levels when there are levels).
  int64_t priority_levels = 0;
  int64_t default_priority_level = 0;
  QueuePolicy default_queue_policy;
  std::map<int64_t, QueuePolicy> priority_queue_policy;  // level (1-based) -> its policy
  bool preserve_ordering = false;  // responses complete in arrival order
  int64_t latency_target_us = 0;   // 0 = off (see above)
  bool manual_clock = false;       // test hook: time moves only through AdvanceClock
  MonitorOptions monitor;          // no tensors: no monitor (see monitor.h)
};

class Scheduler final : public InstanceListener {
 public:
  // The largest max_batch_size accepted (per-size statistics are preallocated).
  static constexpr int64_t kMaxBatchSizeLimit = 65536;
  static constexpr int64_t kMaxPriorityLevels = 1024;
  // The batcher looks at most this many queued requests, and this many shapes, per decision;
  // requests further back are considered as those ahead leave.
  static constexpr size_t kPlanWindow = 4096;
  static constexpr size_t kMaxShapeGroups = 64;

  // Checks the options, then starts one worker per engine and the batcher thread.
  static Status Create(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
                       std::shared_ptr<CompletionQueue> completions,
                       std::unique_ptr<Scheduler>* scheduler);

  ~Scheduler() override;  // Stop(): blocks until the threads have joined
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Validates and queues a request. Never fails to the caller: a bad request, a full queue, or
  // any request after Stop(), gets an error completion instead. Takes mu_ briefly.
  void Submit(std::unique_ptr<Request> request);

  // Pushes an error completion for a request the caller could not even read (counted as a
  // failure).
  void Reject(uint64_t request_id, Status status);

  // The client went away: a request still queued leaves the queue and completes CANCELLED
  // (counted as a CANCELED failure); true then. False when it is not queued (running, done or
  // unknown): a running request finishes and its caller drops the result.
  bool Cancel(uint64_t request_id);

  // True when a request of any priority would be refused as the queue is full now.
  bool QueueFull();

  // Fails every queued request with UNAVAILABLE, lets assigned and running batches finish,
  // joins the batcher and the workers. Idempotent; blocks.
  void Stop();

  // Test hooks. Hold: form no batch while fewer than `queued` requests are queued (0 releases).
  void Hold(size_t queued);
  // Manual clock only (INVALID_ARGUMENT otherwise): moves the clock and wakes the batcher.
  Status AdvanceClock(int64_t microseconds);
  // The latency target's current view: estimated execution of `rows`, and the batch limit.
  double EstimatedExecutionUs(int64_t rows);
  int64_t LatencyBatchLimit();
  size_t Queued();

  Stats& stats() { return stats_; }
  Monitor* monitor() { return monitor_.get(); }  // nullptr without monitoring
  const SchedulerOptions& options() const { return options_; }

  void OnBatchDone(Instance* instance, const Batch& batch, std::vector<Completion>* completions,
                   int64_t execution_ns, bool ok) override;

 private:
  enum class State {
    kRunning,   // accepting requests
    kStopping,  // Stop() began: requests are refused, the threads are winding down
    kStopped,   // every thread has joined
  };

  // A candidate batch: requests of one shape, in dispatch order.
  struct Group {
    const Request* first = nullptr;  // its shape
    int64_t rows = 0;
    int64_t oldest_enqueue_ns = 0;
    bool full = false;
    std::vector<Slot> members;
  };

  // A group as Submit sees it while the batcher waits for a deadline: its shape (every
  // input's) and rows.
  struct GroupSummary {
    std::vector<Shape> dims;
    int64_t rows = 0;
  };

  // What the batcher decided.
  struct Plan {
    bool dispatch = false;
    int64_t deadline_ns = 0;   // when !dispatch: the earliest group deadline (0 = none)
    std::vector<Slot> members;  // when dispatch: in dispatch order
  };

  Scheduler(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
            std::shared_ptr<CompletionQueue> completions);

  void BatcherLoop();
  // mu_ must be held; queue_ must not be empty. Uses groups_ as scratch.
  void PlanBatch(int64_t now_ns, Plan* plan);
  // mu_ must be held: whether a group that is not full is ready, else its deadline.
  bool GroupReady(const Group& group, int64_t now_ns, int64_t* deadline_ns) const;
  // mu_ must be held, the batcher waiting for a deadline: whether `request` (just queued)
  // fills or completes a group it saw, or starts one that is ready alone.
  bool CompletesWaitingGroup(const Request& request);
  // mu_ must be held. True when the batcher could act now (queue non-empty, an instance idle,
  // the hold satisfied): whoever changes one of those notifies cv_ if this becomes true.
  bool BatcherCanAct() const;
  // Pushes an error completion for one request that never reached the queue.
  void RejectRequest(const Request& request, Status status, FailureReason reason);
  // mu_ must NOT be held. Fails requests that left the queue without running.
  void FailQueued(std::vector<std::unique_ptr<Request>>* requests, const Status& status,
                  FailureReason reason);
  // mu_ must NOT be held. Hands the completions of queued requests (completions[i] answers
  // requests[i]) to the completion queue, through the sequencer when ordering is preserved.
  void Deliver(const std::vector<const Request*>& requests, std::vector<Completion>* completions);

  const SchedulerOptions options_;
  std::unique_ptr<Clock> clock_;
  std::shared_ptr<CompletionQueue> completions_;
  std::unique_ptr<Sequencer> sequencer_;  // with preserve_ordering only
  Stats stats_;
  std::unique_ptr<Monitor> monitor_;  // before the instances, which use it
  std::vector<std::shared_ptr<Engine>> engines_;
  std::vector<std::unique_ptr<Instance>> instances_;
  std::vector<bool> preferred_;  // preferred_[rows]: rows is a preferred batch size

  std::mutex mu_;  // guards everything below; never held while executing or pushing
  std::condition_variable cv_;  // the batcher waits here
  State state_ = State::kRunning;
  RequestQueue queue_;
  LatencyEstimator estimator_;
  std::vector<Group> groups_;    // PlanBatch's scratch, kept to reuse its memory
  size_t planned_groups_ = 0;    // how many of groups_ the last plan formed
  int64_t planned_limit_ = 0;    // and the batch limit it used
  std::vector<GroupSummary> waiting_groups_;  // while batcher_awaits_deadline_
  int64_t waiting_limit_ = 0;
  std::vector<Instance*> idle_;  // instances with no batch assigned or running
  size_t hold_ = 0;
  bool batcher_waiting_ = false;  // the batcher is (about to be) blocked on cv_
  // ... and its wait is for a group's deadline (it could act, but the policy said wait): only a
  // request that makes a batch ready, or brings an earlier timeout, needs to wake it.
  bool batcher_awaits_deadline_ = false;
  int64_t batcher_wakes_at_ns_ = 0;  // the batcher's timed wait ends here (0 = untimed)

  std::mutex stop_mu_;  // serializes Stop() callers
  std::thread batcher_;
};

}  // namespace core
}  // namespace pyserver
