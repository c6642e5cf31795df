#include "core/completion_queue.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>

namespace pyserver {
namespace core {

Status CompletionQueue::Create(std::shared_ptr<CompletionQueue>* queue) {
  const int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) {
    return Status::Internal(std::string("eventfd failed: ") + std::strerror(errno));
  }
  queue->reset(new CompletionQueue(fd));
  return Status::Ok();
}

CompletionQueue::~CompletionQueue() { Close(); }

int CompletionQueue::fd() const {
  std::lock_guard<std::mutex> lock(fd_mu_);
  return fd_;
}

void CompletionQueue::Push(Completion completion) {
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // `completion` is destroyed after the lock is released
    was_empty = items_.empty();
    items_.push_back(std::move(completion));
  }
  // Signal after unlocking: the reader may wake at once and take mu_ to drain.
  if (was_empty) Signal();
}

void CompletionQueue::Push(std::vector<Completion>* completions) {
  if (completions->empty()) return;
  bool was_empty;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // the caller destroys *completions, outside the lock
    was_empty = items_.empty();
    if (was_empty) {
      items_.swap(*completions);  // the common case under light load: no element moves
    } else {
      items_.reserve(items_.size() + completions->size());
      for (Completion& c : *completions) items_.push_back(std::move(c));
    }
  }
  completions->clear();
  // Signal after unlocking, once for the whole batch: the reader drains everything at once.
  if (was_empty) Signal();
}

void CompletionQueue::Signal() {
  std::lock_guard<std::mutex> lock(fd_mu_);
  if (fd_ < 0) return;
  const uint64_t one = 1;
  // Cannot block (EFD_NONBLOCK); EAGAIN means the counter is saturated, readable anyway.
  ssize_t written;
  do {
    written = write(fd_, &one, sizeof(one));
  } while (written < 0 && errno == EINTR);
}

std::vector<Completion> CompletionQueue::Drain() {
  // Reset the eventfd BEFORE taking the items: a completion pushed after the swap finds the
  // queue empty and signals again, so no completion is left without a wake-up.
  {
    std::lock_guard<std::mutex> lock(fd_mu_);
    if (fd_ >= 0) {
      uint64_t count;
      ssize_t got;
      do {
        got = read(fd_, &count, sizeof(count));
      } while (got < 0 && errno == EINTR);
      // EAGAIN (nothing signalled) is fine: the swap below decides what there is.
    }
  }
  std::vector<Completion> items;
  {
    std::lock_guard<std::mutex> lock(mu_);
    items.swap(items_);
  }
  return items;
}

void CompletionQueue::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  std::lock_guard<std::mutex> lock(fd_mu_);
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

}  // namespace core
}  // namespace pyserver
