// Tests of the completion queue (core/completion_queue.h): the eventfd it makes, when it is
// signalled and reset, the order completions come out in, what happens after Close(), and many
// threads pushing while one reader drains (the way the scheduler's workers and the event loop
// use it).
//
// Readiness is read with poll(fd, 0): readable means the event loop would wake.

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/tensor.h"
#include "tests/check.h"
#include "tests/core_support.h"

namespace pyserver {
namespace core {
namespace {

using Ids = std::vector<uint64_t>;

std::shared_ptr<CompletionQueue> MakeQueue(testing::Location where = PYSERVER_CALLER) {
  std::shared_ptr<CompletionQueue> queue;
  Status status = CompletionQueue::Create(&queue);
  CHECK_MSG_AT(where, status.ok(), status.message());
  CHECK_AT(where, queue != nullptr && queue->fd() >= 0);
  return queue;
}

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

Completion Done(uint64_t id) {
  Completion c;
  c.request_id = id;
  return c;
}

Ids IdsOf(const std::vector<Completion>& completions) {
  Ids ids;
  for (const Completion& c : completions) ids.push_back(c.request_id);
  return ids;
}

// A Buffer that runs `on_destroy` when it goes: tells a test when (and on which side of the
// queue's lock) a completion holding it is destroyed.
class WatchedBuffer final : public Buffer {
 public:
  explicit WatchedBuffer(std::function<void()> on_destroy) : on_destroy_(std::move(on_destroy)) {}
  ~WatchedBuffer() override { on_destroy_(); }
  const uint8_t* data() const override { return byte_; }
  size_t size() const override { return 1; }

 private:
  std::function<void()> on_destroy_;
  uint8_t byte_[1] = {0};
};

Completion Holding(uint64_t id, std::shared_ptr<Buffer> owner) {
  Completion c = Done(id);
  OutputView view;
  view.owner = std::move(owner);
  view.bytes = 1;
  c.outputs.push_back(std::move(view));
  return c;
}

// ---- 1. The eventfd -------------------------------------------------------------------------

TEST_CASE(CreateMakesANonBlockingCloseOnExecEventfd) {
  auto queue = MakeQueue();
  const int fd = queue->fd();
  CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) != 0);
  CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  // An eventfd reads as one 8-byte counter; nothing signalled yet: EAGAIN, not a block.
  uint64_t count = 0;
  CHECK_EQ(read(fd, &count, sizeof(count)), ssize_t{-1});
  CHECK_EQ(errno, EAGAIN);
}

TEST_CASE(AnEmptyQueueIsNotReadableAndDrainsToNothing) {
  auto queue = MakeQueue();
  CHECK(!Readable(queue->fd()));
  CHECK(queue->Drain().empty());
  CHECK(!Readable(queue->fd()));
}

TEST_CASE(PushMakesTheFdReadableUntilDrained) {
  auto queue = MakeQueue();
  queue->Push(Done(7));
  CHECK(Readable(queue->fd()));
  CHECK(Readable(queue->fd()));  // readiness is level-triggered: polling does not consume it
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{7}));
  CHECK(!Readable(queue->fd()));  // Drain reset the counter
  queue->Push(Done(8));           // into an empty queue again: a new wake-up
  CHECK(Readable(queue->fd()));
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{8}));
}

TEST_CASE(OnlyThePushIntoAnEmptyQueueSignals) {
  auto queue = MakeQueue();
  queue->Push(Done(1));
  queue->Push(Done(2));
  std::vector<Completion> batch;
  batch.push_back(Done(3));
  queue->Push(&batch);
  // Three pushes, one write: the counter holds 1 (reading it here resets it, as Drain would).
  uint64_t count = 0;
  CHECK_EQ(read(queue->fd(), &count, sizeof(count)), ssize_t{sizeof(count)});
  CHECK_EQ(count, uint64_t{1});
  CHECK(!Readable(queue->fd()));
  // Drain does not depend on the counter: what is queued comes out.
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{1, 2, 3}));
}

TEST_CASE(AnEmptyBatchPushChangesNothing) {
  auto queue = MakeQueue();
  std::vector<Completion> none;
  queue->Push(&none);
  CHECK(!Readable(queue->fd()));
  CHECK(queue->Drain().empty());
}

// ---- 2. Order and ownership -------------------------------------------------------------------

TEST_CASE(DrainKeepsPushOrderAcrossSingleAndBatchPushes) {
  auto queue = MakeQueue();
  std::vector<Completion> first;
  for (uint64_t id : {1, 2, 3}) first.push_back(Done(id));
  queue->Push(&first);  // into an empty queue: swapped in whole
  CHECK(first.empty());
  queue->Push(Done(4));
  std::vector<Completion> second;
  for (uint64_t id : {5, 6}) second.push_back(Done(id));
  queue->Push(&second);  // into a non-empty queue: appended
  CHECK(second.empty());
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{1, 2, 3, 4, 5, 6}));
  CHECK(queue->Drain().empty());
}

TEST_CASE(CompletionsKeepTheirOutputsAliveThroughTheQueue) {
  auto queue = MakeQueue();
  bool destroyed = false;
  auto owner = std::make_shared<WatchedBuffer>([&destroyed] { destroyed = true; });
  std::weak_ptr<Buffer> watch = owner;
  queue->Push(Holding(1, std::move(owner)));
  CHECK(!destroyed);  // the queue holds the only reference now
  {
    std::vector<Completion> got = queue->Drain();
    CHECK_EQ(got.size(), size_t{1});
    CHECK(got[0].outputs[0].owner == watch.lock());
    CHECK(!destroyed);
  }
  CHECK(destroyed);  // the drained completion was the last holder
}

// ---- 3. Close ---------------------------------------------------------------------------------

TEST_CASE(CloseKeepsWhatWaitsAndDropsLaterPushes) {
  auto queue = MakeQueue();
  queue->Push(Done(1));
  queue->Close();
  CHECK_EQ(queue->fd(), -1);
  queue->Close();  // idempotent
  CHECK_EQ(queue->fd(), -1);

  int dropped = 0;
  queue->Push(Holding(2, std::make_shared<WatchedBuffer>([&dropped] { ++dropped; })));
  std::vector<Completion> batch;
  batch.push_back(Holding(3, std::make_shared<WatchedBuffer>([&dropped] { ++dropped; })));
  queue->Push(&batch);
  batch.clear();  // the caller destroys a dropped batch
  CHECK_EQ(dropped, 2);
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{1}));  // still drainable, with no descriptor
  CHECK(queue->Drain().empty());
}

// A completion's last reference may run code that uses the queue (a buffer owner's destructor
// can reach Python, and through it the queue): dropped and drained completions must be
// destroyed after the queue's lock is released, or this deadlocks (and the watchdog fails it).
TEST_CASE(DroppedCompletionsAreDestroyedOutsideTheLock) {
  auto queue = MakeQueue();
  CompletionQueue* q = queue.get();
  int reentered = 0;
  auto reenter = [q, &reentered] {
    q->Drain();  // takes the queue's lock
    ++reentered;
  };
  queue->Close();
  queue->Push(Holding(1, std::make_shared<WatchedBuffer>(reenter)));
  std::vector<Completion> batch;
  batch.push_back(Holding(2, std::make_shared<WatchedBuffer>(reenter)));
  queue->Push(&batch);
  batch.clear();
  CHECK_EQ(reentered, 2);
}

TEST_CASE(DrainedCompletionsAreDestroyedOutsideTheLock) {
  auto queue = MakeQueue();
  CompletionQueue* q = queue.get();
  int reentered = 0;
  queue->Push(Holding(1, std::make_shared<WatchedBuffer>([q, &reentered] {
    q->Push(Done(99));  // takes the queue's lock
    ++reentered;
  })));
  queue->Drain();  // the returned completion dies at the end of this statement
  CHECK_EQ(reentered, 1);
  CHECK_EQ(IdsOf(queue->Drain()), (Ids{99}));
}

// ---- 4. Many threads --------------------------------------------------------------------------

constexpr int kProducers = 4;
constexpr uint64_t kPerProducer = 3000;

// Producer p pushes ids (p << 32) | 1 .. kPerProducer, one at a time and in batches of three,
// with no pause; the reader only drains when poll says the eventfd is readable.
void Produce(CompletionQueue* queue, uint64_t producer) {
  uint64_t next = 1;
  while (next <= kPerProducer) {
    if (next % 2 == 0 && next + 2 <= kPerProducer) {
      std::vector<Completion> batch;
      for (int k = 0; k < 3; ++k) batch.push_back(Done((producer << 32) | next++));
      queue->Push(&batch);
    } else {
      queue->Push(Done((producer << 32) | next++));
    }
  }
}

TEST_CASE(ManyThreadsPushWhileOneReaderDrains) {
  auto queue = MakeQueue();
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) producers.emplace_back(Produce, queue.get(), p);

  // Every id exactly once, and each producer's in the order it pushed them.
  std::vector<uint64_t> last(kProducers, 0);
  uint64_t received = 0;
  bool in_order = true;
  bool timed_out = false;
  while (received < kProducers * kPerProducer) {
    pollfd fd{queue->fd(), POLLIN, 0};
    if (poll(&fd, 1, static_cast<int>(kWait.count())) != 1) {
      timed_out = true;  // a wake-up was lost: completions wait and the fd says nothing
      break;
    }
    for (const Completion& c : queue->Drain()) {
      const uint64_t producer = c.request_id >> 32;
      const uint64_t sequence = c.request_id & 0xffffffffu;
      if (producer >= kProducers || sequence != last[producer] + 1) in_order = false;
      if (producer < kProducers) last[producer] = sequence;
      ++received;
    }
  }
  for (std::thread& t : producers) t.join();
  CHECK_MSG(!timed_out, "no wake-up within " << kWait.count() << " ms with " << received
                                             << " of " << kProducers * kPerProducer
                                             << " received");
  CHECK(in_order);
  CHECK_EQ(last, std::vector<uint64_t>(kProducers, kPerProducer));
  CHECK(queue->Drain().empty());
}

// Close() while workers still push (a model unloading): no push may write to the descriptor
// after it is closed, where a new one with the same number may already live.
TEST_CASE(CloseWhilePushingNeverSignalsAnotherDescriptor) {
  auto queue = MakeQueue();
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> pushed{0};
  std::vector<std::thread> producers;
  for (int p = 0; p < kProducers; ++p) {
    producers.emplace_back([&queue, &stop, &pushed] {
      while (!stop.load()) {
        queue->Push(Done(1));
        pushed.fetch_add(1);
        if (pushed.load() % 64 == 0) queue->Drain();  // keep it going empty -> non-empty
      }
    });
  }
  while (pushed.load() < 1000) std::this_thread::yield();
  const int old_fd = queue->fd();
  queue->Close();
  // Descriptors are reused lowest first: the next one made most likely has the old number.
  auto next = MakeQueue();
  const uint64_t at_close = pushed.load();
  while (pushed.load() < at_close + 1000) std::this_thread::yield();
  stop = true;
  for (std::thread& t : producers) t.join();
  CHECK_MSG(!Readable(next->fd()), "a push after Close() signalled descriptor "
                                       << next->fd() << " (the closed queue had " << old_fd
                                       << ")");
  CHECK(next->Drain().empty());
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
