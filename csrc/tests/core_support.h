// What the core's C++ tests share beyond check.h: printing the core's enums in failure messages,
// the bound on waits, and waiting for completions on a CompletionQueue's eventfd.
#pragma once

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <ostream>
#include <utility>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/status.h"
#include "core/types.h"

namespace pyserver {
namespace core {

// For failure messages (check.h's Describe finds them by ADL).
inline std::ostream& operator<<(std::ostream& out, StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return out << "OK";
    case StatusCode::kInvalidArgument:
      return out << "INVALID_ARGUMENT";
    case StatusCode::kNotFound:
      return out << "NOT_FOUND";
    case StatusCode::kUnavailable:
      return out << "UNAVAILABLE";
    case StatusCode::kInternal:
      return out << "INTERNAL";
    case StatusCode::kDeadlineExceeded:
      return out << "DEADLINE_EXCEEDED";
    case StatusCode::kCancelled:
      return out << "CANCELLED";
    case StatusCode::kUnsupported:
      return out << "UNSUPPORTED";
  }
  return out << "StatusCode(" << static_cast<int>(code) << ")";
}

inline std::ostream& operator<<(std::ostream& out, DataType dtype) {
  return out << DataTypeName(dtype);
}

// The bound on every wait for something that must happen.
constexpr std::chrono::milliseconds kWait(10000);

// Completions from `queue` until there are at least `n` or `bound` passes: whatever came, in
// the order the queue gave them. Waits on the eventfd only (never polls the queue without it),
// so a lost wake-up shows as missing completions.
inline std::vector<Completion> WaitCompletions(CompletionQueue& queue, size_t n,
                                               std::chrono::milliseconds bound = kWait) {
  std::vector<Completion> got;
  const auto deadline = std::chrono::steady_clock::now() + bound;
  while (got.size() < n) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd fd{queue.fd(), POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(left.count()) + 1) <= 0) continue;
    for (Completion& c : queue.Drain()) got.push_back(std::move(c));
  }
  return got;
}

}  // namespace core
}  // namespace pyserver
