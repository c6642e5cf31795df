// Sequencer: releases completions in arrival order, for models with preserve_ordering.
//
// Every queued request is numbered in arrival order (RequestQueue) and completes exactly once:
// executed, failed, timed out, cancelled or abandoned at shutdown. A completion whose
// predecessors are still unanswered waits here; each push releases the longest run that is
// now complete, in order, into the completion queue.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"

namespace pyserver {
namespace core {

class Sequencer {
 public:
  explicit Sequencer(std::shared_ptr<CompletionQueue> out) : out_(std::move(out)) {}

  // completions[i] answers the request numbered sequences[i]. Takes mu_ and, under it, the
  // completion queue's lock: two releases cannot overtake each other on the way out.
  void Push(const std::vector<uint64_t>& sequences, std::vector<Completion>* completions);

  size_t waiting() const;  // completions held back (a test hook)

 private:
  std::shared_ptr<CompletionQueue> out_;
  mutable std::mutex mu_;  // guards next_ and waiting_
  uint64_t next_ = 0;      // the number of the next completion to release
  std::map<uint64_t, Completion> waiting_;
};

}  // namespace core
}  // namespace pyserver
