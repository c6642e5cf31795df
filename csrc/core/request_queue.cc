#include "core/request_queue.h"

#include <algorithm>
#include <unordered_set>
#include <utility>

namespace pyserver {
namespace core {

RequestQueue::RequestQueue(std::string model_name, std::vector<QueuePolicy> policies,
                           size_t default_level, bool priorities)
    : model_name_(std::move(model_name)),
      policies_(std::move(policies)),
      default_level_(default_level),
      priorities_(priorities),
      subs_(2 * policies_.size()),
      level_sizes_(policies_.size(), 0) {}

Status RequestQueue::Push(std::unique_ptr<Request>* request_ptr, int64_t now_ns) {
  Request& request = **request_ptr;
  size_t level = default_level_;
  if (priorities_ && request.priority != 0) {
    if (request.priority > policies_.size()) {
      return Status::InvalidArgument(
          "request priority " + std::to_string(request.priority) + " is outside 1.." +
          std::to_string(policies_.size()) + " (the priority_levels of model '" + model_name_ +
          "'; 0 means its default level " + std::to_string(default_level_ + 1) + ")");
    }
    level = static_cast<size_t>(request.priority - 1);
  }
  const QueuePolicy& policy = policies_[level];
  if (policy.max_queue_size > 0 &&
      level_sizes_[level] >= static_cast<size_t>(policy.max_queue_size)) {
    std::string where = priorities_ ? "the queue of priority level " + std::to_string(level + 1)
                                    : "the queue";
    return Status::ResourceExhausted("model '" + model_name_ + "': " + where + " is full (" +
                               std::to_string(level_sizes_[level]) +
                               " requests waiting, max_queue_size " +
                               std::to_string(policy.max_queue_size) + ")");
  }

  int64_t timeout_us = policy.default_timeout_us;
  if (policy.allow_timeout_override && request.timeout_us > 0) {
    // The request may only shorten the model's timeout (or set one where there is none).
    const int64_t asked = static_cast<int64_t>(
        std::min<uint64_t>(request.timeout_us, static_cast<uint64_t>(kMaxTimeoutUs)));
    timeout_us = timeout_us > 0 ? std::min(timeout_us, asked) : asked;
  }
  timeout_us = std::min(timeout_us, kMaxTimeoutUs);

  request.level = level;
  request.sequence = next_sequence_++;
  request.delay_on_timeout = policy.delay_on_timeout;
  request.delayed = false;
  request.timeout_ns = timeout_us > 0 ? now_ns + timeout_us * 1000 : 0;
  if (request.timeout_ns != 0) timeouts_.emplace(request.timeout_ns, &request);
  subs_[2 * level].push_back(std::move(*request_ptr));
  ++level_sizes_[level];
  ++size_;
  return Status::Ok();
}

bool RequestQueue::Full() const {
  for (size_t level = 0; level < policies_.size(); ++level) {
    const int64_t limit = policies_[level].max_queue_size;
    if (limit == 0 || level_sizes_[level] < static_cast<size_t>(limit)) return false;
  }
  return true;
}

void RequestQueue::Forget(const Request& request) {
  if (request.timeout_ns != 0 && !request.delayed) {
    auto range = timeouts_.equal_range(request.timeout_ns);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == &request) {
        timeouts_.erase(it);
        break;
      }
    }
  }
  --level_sizes_[request.level];
  --size_;
}

std::vector<std::unique_ptr<Request>> RequestQueue::Take(const std::vector<Slot>& slots) {
  std::vector<std::unique_ptr<Request>> taken;
  taken.reserve(slots.size());
  std::vector<size_t> touched_end(subs_.size(), 0);  // one past the last taken index per queue
  for (const Slot& slot : slots) {
    std::unique_ptr<Request>& entry = subs_[slot.queue][slot.index];
    Forget(*entry);
    taken.push_back(std::move(entry));
    touched_end[slot.queue] = std::max(touched_end[slot.queue], slot.index + 1);
  }
  // Close the gaps, keeping the requests left behind in order. Usually the slots are a prefix
  // of the first queue and this erases from its front.
  for (size_t q = 0; q < subs_.size(); ++q) {
    if (touched_end[q] == 0) continue;
    auto& sub = subs_[q];
    const auto end = sub.begin() + static_cast<std::ptrdiff_t>(touched_end[q]);
    sub.erase(std::remove(sub.begin(), end, nullptr), end);
  }
  return taken;
}

int64_t RequestQueue::NextTimeoutNs() const {
  return timeouts_.empty() ? 0 : timeouts_.begin()->first;
}

void RequestQueue::Expire(int64_t now_ns, std::vector<std::unique_ptr<Request>>* rejected) {
  std::unordered_set<const Request*> expired;
  std::vector<bool> levels_touched(policies_.size(), false);
  while (!timeouts_.empty() && timeouts_.begin()->first <= now_ns) {
    const Request* request = timeouts_.begin()->second;
    expired.insert(request);
    levels_touched[request->level] = true;
    timeouts_.erase(timeouts_.begin());
  }
  if (expired.empty()) return;
  for (size_t level = 0; level < policies_.size(); ++level) {
    if (!levels_touched[level]) continue;
    // One pass over the level's queue: the expired leave it in arrival order, for the delayed
    // queue (DELAY) or for their error completion (REJECT); the others keep their order.
    auto& main = subs_[2 * level];
    auto& delayed = subs_[2 * level + 1];
    std::deque<std::unique_ptr<Request>> kept;
    for (auto& entry : main) {
      if (expired.count(entry.get()) == 0) {
        kept.push_back(std::move(entry));
      } else if (entry->delay_on_timeout) {
        entry->delayed = true;
        delayed.push_back(std::move(entry));
      } else {
        --level_sizes_[level];
        --size_;
        rejected->push_back(std::move(entry));
      }
    }
    main.swap(kept);
  }
}

std::unique_ptr<Request> RequestQueue::Remove(uint64_t id) {
  for (auto& sub : subs_) {
    for (auto it = sub.begin(); it != sub.end(); ++it) {
      if ((*it)->id != id) continue;
      std::unique_ptr<Request> request = std::move(*it);
      sub.erase(it);
      Forget(*request);
      return request;
    }
  }
  return nullptr;
}

void RequestQueue::Clear(std::vector<std::unique_ptr<Request>>* out) {
  for (auto& sub : subs_) {
    for (auto& entry : sub) out->push_back(std::move(entry));
    sub.clear();
  }
  timeouts_.clear();
  std::fill(level_sizes_.begin(), level_sizes_.end(), 0);
  size_ = 0;
}

}  // namespace core
}  // namespace pyserver
