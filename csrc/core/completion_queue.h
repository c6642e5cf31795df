// CompletionQueue: where workers leave finished requests for the event loop.
//
// Workers push (a whole batch in one locked push) and make the eventfd readable; the event loop
// has one reader on the eventfd and drains everything waiting at once. The eventfd is written
// only when the queue goes from empty to non-empty: a reader that has not drained yet will see
// the later completions anyway, so one wake-up serves many batches under load.
#pragma once

#include <mutex>
#include <memory>
#include <vector>

#include "core/completion.h"
#include "core/status.h"

namespace pyserver {
namespace core {

class CompletionQueue {
 public:
  // Makes the eventfd (non-blocking, close-on-exec).
  static Status Create(std::shared_ptr<CompletionQueue>* queue);

  ~CompletionQueue();
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  // The eventfd, readable while completions wait; -1 once closed.
  int fd() const;

  // Called from any thread. After Close() pushes are dropped (nobody is listening); the dropped
  // completions are destroyed by the caller, outside the lock.
  void Push(Completion completion);
  void Push(std::vector<Completion>* completions);  // moves every element out, one lock

  // Resets the eventfd, then returns every waiting completion.
  std::vector<Completion> Drain();

  // Closes the eventfd; idempotent. Completions still waiting stay drainable.
  void Close();

 private:
  explicit CompletionQueue(int fd) : fd_(fd) {}
  // Writes the eventfd once. Takes fd_mu_ (not mu_): no pusher waits on the syscall behind the
  // queue's lock, and Close() cannot close the descriptor under a write.
  void Signal();

  mutable std::mutex fd_mu_;  // guards fd_'s lifetime only
  int fd_;

  // Guards items_ and closed_; held for a vector append or swap, never for I/O, and no
  // destructor that might take the GIL runs under it.
  std::mutex mu_;
  std::vector<Completion> items_;
  bool closed_ = false;
};

}  // namespace core
}  // namespace pyserver
