// RequestQueue: a model's waiting requests, by priority level, with their queue policies.
//
// Levels are strict priorities: level 0 (the client's priority 1) goes first. Within a level
// requests keep their arrival order; a request whose queue timeout ran out under timeout_action
// DELAY moves to its level's delayed queue, which is served after the level's other requests
// and before the next level (Triton's order). The dispatch order is therefore
//   level 0, level 0 delayed, level 1, level 1 delayed, ...
// and it is the only order anybody iterates in.
//
// Not thread-safe: the scheduler guards it with its lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/request.h"
#include "core/status.h"

namespace pyserver {
namespace core {

// Triton's ModelQueuePolicy.
struct QueuePolicy {
  bool delay_on_timeout = false;    // timeout_action: DELAY (true) or REJECT (false)
  int64_t default_timeout_us = 0;   // 0 = requests wait as long as it takes
  bool allow_timeout_override = false;  // a request's timeout may shorten the default
  int64_t max_queue_size = 0;       // 0 = unbounded; beyond it a request is rejected at once
};

// A request's place in the dispatch order: sub-queue `queue` (2 * level, + 1 for the level's
// delayed requests), position `index` in it.
struct Slot {
  size_t queue = 0;
  size_t index = 0;
};

class RequestQueue {
 public:
  // The largest timeout honoured (longer ones are cut to it), so deadlines cannot overflow.
  static constexpr int64_t kMaxTimeoutUs = int64_t{1} << 40;  // about 12.7 days

  // policies: one per level (at least one); default_level: the index a request with priority 0
  // goes to. priorities: whether the model has priority levels at all (without them a
  // request's priority is ignored, as in Triton).
  RequestQueue(std::string model_name, std::vector<QueuePolicy> policies, size_t default_level,
               bool priorities);

  // Decides the request's level and timeout, and checks that it may wait here: a priority
  // outside 1..levels is INVALID_ARGUMENT, a full level UNAVAILABLE (nothing is queued then).
  // On success queues it, numbered in arrival order. now_ns: the scheduler's clock.
  Status Push(std::unique_ptr<Request>* request, int64_t now_ns);

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  // True when no request of any priority could be queued now (every level bounded and full).
  bool Full() const;

  size_t sub_queues() const { return subs_.size(); }
  const std::deque<std::unique_ptr<Request>>& sub_queue(size_t queue) const {
    return subs_[queue];
  }

  // Takes the requests at `slots` (valid, in dispatch order), closing the gaps behind them.
  std::vector<std::unique_ptr<Request>> Take(const std::vector<Slot>& slots);

  // When the earliest queue timeout runs out (scheduler clock), or 0 when none is pending.
  int64_t NextTimeoutNs() const;
  // Applies every timeout that ran out by now_ns: REJECT requests leave the queue into
  // `rejected` (arrival order per level); DELAY requests move to their level's delayed queue.
  void Expire(int64_t now_ns, std::vector<std::unique_ptr<Request>>* rejected);

  // Removes the queued request with this id (a cancellation); null when it is not queued.
  std::unique_ptr<Request> Remove(uint64_t id);
  // Removes everything (shutdown), in dispatch order.
  void Clear(std::vector<std::unique_ptr<Request>>* out);

 private:
  void Forget(const Request& request);  // drops its timeout entry and its count

  const std::string model_name_;
  const std::vector<QueuePolicy> policies_;
  const size_t default_level_;
  const bool priorities_;

  std::vector<std::deque<std::unique_ptr<Request>>> subs_;  // 2 per level
  std::vector<size_t> level_sizes_;
  size_t size_ = 0;
  uint64_t next_sequence_ = 0;
  // Queued requests that have a timeout (not yet delayed), by when it runs out.
  std::multimap<int64_t, Request*> timeouts_;
};

}  // namespace core
}  // namespace pyserver
