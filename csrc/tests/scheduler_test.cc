// Tests of the batching scheduler (core/scheduler.h), at the C++ level.
//
// Every test drives the scheduler deterministically, so that it can assert exact batch
// boundaries and orders:
//   - SchedulerOptions.manual_clock: time moves only through Scheduler::AdvanceClock;
//   - Scheduler::Hold(n): no batch forms until n requests are queued;
//   - GatedEngine: records every batch it runs and blocks in Execute until the test releases
//     it, so the test decides when an instance is busy and when it frees;
//   - completions are read from the completion queue after poll() on its eventfd.
// Every wait for something that must happen is bounded (kWait). A check that something does
// NOT happen cannot be proved by waiting; the few that need one (ExpectQuiet) give the batcher a
// short grace period, so they can pass wrongly on a slow machine but never fail wrongly. Where a
// real barrier exists the tests use it instead (see PreserveOrderingHoldsLaterCompletions).
//
// Requests carry one INT64 input "x" of shape [rows, width] whose every element is the
// request's id, and the engine echoes it as output "y": the engine reads which requests a batch
// holds from its rows, and every OK completion is checked to hold exactly its own rows.
//
// Each test ends with Harness::Finish(): Stop(), then every submitted request must have had
// exactly one completion.

#include "tests/scheduler_harness.h"

namespace pyserver {
namespace core {
namespace {

// ---- 1. Dynamic batching ----------------------------------------------------------------------

TEST_CASE(BatchesSplitAtMaxBatchSize) {
  Harness h(Options(4, kLongDelayUs), Ungated());
  h.scheduler().Hold(6);
  for (int i = 0; i < 6; ++i) h.Submit();
  // Six queued: the first four fill a batch at once; two are left, under no rule that sends them.
  CHECK_EQ(IdsOf(h.Wait(4)), (Ids{1, 2, 3, 4}));
  h.scheduler().Hold(0);
  h.ExpectQuiet();
  h.Advance(kLongDelayUs);
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{5, 6}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1, 2, 3, 4}, {5, 6}}));
  CHECK_EQ(h.scheduler().stats().BatchSizes(), (std::vector<int64_t>{4, 2}));
  h.Finish();
}

TEST_CASE(PreferredBatchSizeDispatchesAtOnce) {
  SchedulerOptions options = Options(8, kLongDelayUs);
  options.preferred_batch_sizes = {2, 4};
  Harness h(options, Ungated());
  h.scheduler().Hold(5);
  for (int i = 0; i < 5; ++i) h.Submit();
  // Rows 1..5 queued: the longest prefix of a preferred size (4) goes, long before the delay.
  CHECK_EQ(IdsOf(h.Wait(4)), (Ids{1, 2, 3, 4}));
  h.scheduler().Hold(0);
  h.ExpectQuiet();  // one row is no preferred size
  h.Submit();       // two rows: preferred
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{5, 6}));

  // Rows, not requests, make the size: 1 + 3 rows is the preferred 4.
  h.Submit();
  h.ExpectQuiet();
  h.Submit(Rows(3));
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{7, 8}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1, 2, 3, 4}, {5, 6}, {7, 8}}));
  CHECK_EQ(h.scheduler().stats().BatchSizes(), (std::vector<int64_t>{4, 2, 4}));
  h.Finish();
}

TEST_CASE(QueueDelayRunsFromTheOldestRequest) {
  Harness h(Options(8, 1000), Ungated());
  h.Submit();  // t = 0
  h.Advance(600);
  h.Submit();  // t = 600
  h.Advance(399);
  h.ExpectQuiet();  // the oldest has waited 999 us
  h.Advance(1);
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{1, 2}));  // the whole group goes, the younger one too

  h.Submit();  // t = 1000: the window starts again with the next oldest request
  h.Advance(999);
  h.ExpectQuiet();
  h.Advance(1);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{3}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1, 2}, {3}}));
  h.Finish();
}

TEST_CASE(PendingBatchGrowsWhileTheInstanceIsBusy) {
  Harness h(Options(8, 0), Gated(1));
  h.Submit();  // 1: occupies the only instance
  CHECK(h.engine().WaitEntered(1));
  // Delay 0 would send each at once, but no instance is free: the pending batch grows.
  h.Submit(Rows(1));  // 2
  h.Submit(Rows(1));  // 3
  h.Submit(Rows(3));  // 4
  h.Submit(Rows(2));  // 5: 7 rows so far
  h.Submit(Rows(2));  // 6: would make 9 > 8
  h.ExpectQuiet();
  h.engine().Release(1);
  CHECK(h.engine().WaitEntered(2));
  std::vector<RanBatch> batches = h.engine().batches();
  CHECK_EQ(batches[1].ids, (Ids{2, 3, 4, 5}));  // everything that fit
  CHECK_EQ(batches[1].shape, (Shape{7, kWidth}));
  h.engine().Open();
  CHECK_EQ(IdsOf(h.Wait(6)), (Ids{1, 2, 3, 4, 5, 6}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {2, 3, 4, 5}, {6}}));
  h.Finish();
}

// ---- 2. Priorities ----------------------------------------------------------------------------

TEST_CASE(PriorityLevelsRunInStrictPriorityOrder) {
  SchedulerOptions options = Options(1, 0);
  options.priority_levels = 3;
  options.default_priority_level = 2;
  Harness h(options, Gated(1));
  h.Submit(Priority(3));  // 1: occupies the instance
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Priority(3));  // 2
  h.Submit(Priority(2));  // 3
  h.Submit(Priority(1));  // 4
  h.Submit(Priority(3));  // 5
  h.Submit(Priority(1));  // 6
  h.Submit(Priority(0));  // 7: the default level, 2
  h.Submit(Priority(2));  // 8
  h.Submit(Priority(0));  // 9: level 2
  // One batch at a time: level 1 (4, 6), level 2 (3, 7, 8, 9), level 3 (2, 5), FIFO within each.
  // Request 10 (priority 1) arrives while 6 runs and overtakes every level-2 request.
  const Ids expected = {4, 6, 10, 3, 7, 8, 9, 2, 5};
  for (size_t k = 0; k < expected.size(); ++k) {
    h.engine().Release(1);
    CHECK(h.engine().WaitEntered(k + 2));
    CHECK_EQ(h.engine().batches()[k + 1].ids, (Ids{expected[k]}));
    if (expected[k] == 6) CHECK_EQ(h.Submit(Priority(1)), uint64_t{10});
  }
  h.engine().Open();
  CHECK_EQ(IdsOf(h.Wait(10)), (Ids{1, 4, 6, 10, 3, 7, 8, 9, 2, 5}));
  h.Finish();
}

TEST_CASE(BatchFillsInPriorityOrder) {
  SchedulerOptions options = Options(4, 0);
  options.priority_levels = 3;
  options.default_priority_level = 3;
  Harness h(options, Gated(1));
  h.Submit(Priority(1));  // 1: occupies the instance
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Priority(3));  // 2
  h.Submit(Priority(2));  // 3
  h.Submit(Priority(1));  // 4
  h.Submit(Priority(0));  // 5: level 3
  h.Submit(Priority(1));  // 6
  h.Submit(Priority(2));  // 7
  h.engine().Open();
  // The batch takes rows in dispatch order (level, then arrival) and is full at 4.
  CHECK_EQ(IdsOf(h.Wait(7)), (Ids{1, 4, 6, 3, 7, 2, 5}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {4, 6, 3, 7}, {2, 5}}));
  h.Finish();
}

TEST_CASE(PriorityOutsideTheLevelsIsInvalid) {
  SchedulerOptions options = Options(8, 0);
  options.priority_levels = 3;
  options.default_priority_level = 1;
  Harness h(options, Ungated());
  h.Submit(Priority(4));
  // Refused inside Submit: the completion is there as soon as it returns.
  std::vector<Completion> refused = h.DrainNow();
  CHECK_EQ(IdsOf(refused), (Ids{1}));
  CHECK_EQ(refused[0].status.code(), StatusCode::kInvalidArgument);
  CHECK_CONTAINS(refused[0].status.message(), "priority 4");
  CHECK_CONTAINS(refused[0].status.message(), "1..3");
  CHECK_EQ(h.Failures(FailureReason::kOther), uint64_t{1});
  CHECK_EQ(h.scheduler().Queued(), size_t{0});

  h.Submit(Priority(3));
  CHECK_EQ(CodesOf(h.Wait(1)), (std::vector<StatusCode>{StatusCode::kOk}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{2}}));
  h.Finish();
}

TEST_CASE(PrioritiesIgnoredWithoutLevels) {
  Harness h(Options(1, 0), Gated(1));  // priority_levels = 0
  h.Submit(Priority(3));
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Priority(3));
  h.Submit(Priority(1));
  h.Submit(Priority(2));
  h.Submit(Priority(9));  // no levels to be outside of: ignored, not refused
  h.engine().Open();
  CHECK_EQ(IdsOf(h.Wait(5)), (Ids{1, 2, 3, 4, 5}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {2}, {3}, {4}, {5}}));
  h.Finish();
}

// ---- 3. Queue policies ------------------------------------------------------------------------

TEST_CASE(MaxQueueSizeRejectsPerLevel) {
  SchedulerOptions options = Options(8, 0);
  options.priority_levels = 2;
  options.default_priority_level = 2;
  options.default_queue_policy.max_queue_size = 1;  // level 2
  QueuePolicy level1;
  level1.max_queue_size = 2;
  options.priority_queue_policy[1] = level1;
  Harness h(options, Gated(1));
  h.Submit(Priority(1));  // 1: runs, so it is not queued
  CHECK(h.engine().WaitEntered(1));

  h.Submit(Priority(1));  // 2
  h.Submit(Priority(1));  // 3: level 1 is full now
  CHECK(h.DrainNow().empty());
  CHECK(!h.scheduler().QueueFull());  // level 2 has room
  h.Submit(Priority(1));  // 4: refused at once
  std::vector<Completion> refused = h.DrainNow();
  CHECK_EQ(IdsOf(refused), (Ids{4}));
  CHECK_EQ(refused[0].status.code(), StatusCode::kResourceExhausted);
  CHECK_CONTAINS(refused[0].status.message(), "model 'm'");
  CHECK_CONTAINS(refused[0].status.message(), "max_queue_size 2");

  h.Submit(Priority(2));  // 5: level 2's only place
  CHECK(h.scheduler().QueueFull());
  h.Submit(Priority(0));  // 6: the default level, 2, is full
  refused = h.DrainNow();
  CHECK_EQ(IdsOf(refused), (Ids{6}));
  CHECK_EQ(refused[0].status.code(), StatusCode::kResourceExhausted);
  CHECK_CONTAINS(refused[0].status.message(), "max_queue_size 1");
  CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{2});
  CHECK_EQ(h.scheduler().Queued(), size_t{3});

  h.engine().Open();
  std::vector<Completion> done = h.Wait(4);
  CHECK_EQ(IdsOf(done), (Ids{1, 2, 3, 5}));
  CHECK_EQ(CodesOf(done), std::vector<StatusCode>(4, StatusCode::kOk));
  CHECK(!h.scheduler().QueueFull());
  CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{2});
  h.Finish();
}

TEST_CASE(MaxQueueSizeWithoutLevels) {
  SchedulerOptions options = Options(8, 0);
  options.default_queue_policy.max_queue_size = 2;
  Harness h(options, Gated(1));
  h.Submit();
  CHECK(h.engine().WaitEntered(1));
  h.Submit();
  CHECK(!h.scheduler().QueueFull());
  h.Submit();
  CHECK(h.scheduler().QueueFull());
  h.Submit();
  std::vector<Completion> refused = h.DrainNow();
  CHECK_EQ(IdsOf(refused), (Ids{4}));
  CHECK_EQ(refused[0].status.code(), StatusCode::kResourceExhausted);
  CHECK_CONTAINS(refused[0].status.message(), "model 'm'");
  CHECK_CONTAINS(refused[0].status.message(), "max_queue_size 2");
  CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{1});
  h.engine().Open();
  CHECK_EQ(IdsOf(h.Wait(3)), (Ids{1, 2, 3}));
  CHECK(!h.scheduler().QueueFull());
  h.Finish();
}

TEST_CASE(QueueTimeoutRejectsWhileTheInstanceIsBusy) {
  SchedulerOptions options = Options(8, 0);
  options.default_queue_policy.default_timeout_us = 1000;  // REJECT
  Harness h(options, Gated(1));
  h.Submit();  // 1: runs (a running request has left the queue and its timeout)
  CHECK(h.engine().WaitEntered(1));
  h.Submit();  // 2: times out at 1000
  h.Advance(600);
  h.Submit();  // 3: would time out at 1600
  h.Advance(399);
  h.ExpectQuiet();
  h.Advance(1);
  // The timeout fires though no instance is free: 1 is still inside the engine.
  std::vector<Completion> expired = h.Wait(1);
  CHECK_EQ(IdsOf(expired), (Ids{2}));
  CHECK_EQ(expired[0].status.code(), StatusCode::kDeadlineExceeded);
  CHECK_CONTAINS(expired[0].status.message(), "timed out");
  CHECK_EQ(h.engine().running(), size_t{1});
  CHECK_EQ(h.engine().entered(), size_t{1});
  CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{1});

  h.engine().Open();
  std::vector<Completion> done = h.Wait(2);
  CHECK_EQ(IdsOf(done), (Ids{1, 3}));
  CHECK_EQ(CodesOf(done), std::vector<StatusCode>(2, StatusCode::kOk));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {3}}));
  h.Finish();
}

TEST_CASE(TimeoutOverrideShortensButNeverExtends) {
  {
    SchedulerOptions options = Options(8, 0);
    options.default_queue_policy.default_timeout_us = 1000;
    options.default_queue_policy.allow_timeout_override = true;
    Harness h(options, Gated(1));
    h.Submit();  // 1: occupies the instance
    CHECK(h.engine().WaitEntered(1));
    h.Submit(Timeout(300));   // 2: shorter than the default: applies
    h.Submit(Timeout(5000));  // 3: longer: the default still applies
    h.Submit();               // 4: none asked: the default
    h.Advance(299);
    h.ExpectQuiet();
    h.Advance(1);
    std::vector<Completion> expired = h.Wait(1);
    CHECK_EQ(IdsOf(expired), (Ids{2}));
    CHECK_EQ(expired[0].status.code(), StatusCode::kDeadlineExceeded);
    h.Advance(699);
    h.ExpectQuiet();
    h.Advance(1);
    expired = h.Wait(2);
    CHECK_EQ(IdsOf(expired), (Ids{3, 4}));
    CHECK_EQ(CodesOf(expired), std::vector<StatusCode>(2, StatusCode::kDeadlineExceeded));
    CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{3});
    h.Finish();
  }
  {
    // With no default timeout, an allowed override sets one.
    SchedulerOptions options = Options(8, 0);
    options.default_queue_policy.allow_timeout_override = true;
    Harness h(options, Gated(1));
    h.Submit();
    CHECK(h.engine().WaitEntered(1));
    h.Submit(Timeout(300));  // 2
    h.Submit();              // 3: no timeout at all
    h.Advance(300);
    CHECK_EQ(IdsOf(h.Wait(1)), (Ids{2}));
    h.Advance(kLongDelayUs);
    h.ExpectQuiet();
    h.engine().Open();
    CHECK_EQ(IdsOf(h.Wait(2)), (Ids{1, 3}));
    h.Finish();
  }
}

TEST_CASE(RequestTimeoutIgnoredWithoutOverride) {
  SchedulerOptions options = Options(8, 0);
  options.default_queue_policy.default_timeout_us = 1000;  // allow_timeout_override = false
  Harness h(options, Gated(1));
  h.Submit();
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Timeout(300));   // 2: its own timeout is ignored
  h.Submit(Timeout(5000));  // 3: likewise
  h.Advance(300);
  h.ExpectQuiet();
  h.Advance(699);
  h.ExpectQuiet();
  h.Advance(1);
  std::vector<Completion> expired = h.Wait(2);
  CHECK_EQ(IdsOf(expired), (Ids{2, 3}));
  CHECK_EQ(CodesOf(expired), std::vector<StatusCode>(2, StatusCode::kDeadlineExceeded));
  h.Finish();
}

TEST_CASE(DelayedRequestWaitsBehindItsLevel) {
  SchedulerOptions options = Options(1, 0);
  options.priority_levels = 2;
  options.default_priority_level = 2;
  QueuePolicy delay;
  delay.delay_on_timeout = true;
  delay.default_timeout_us = 1000;
  options.priority_queue_policy[1] = delay;  // level 2: no timeout
  Harness h(options, Gated(1));
  h.Submit(Priority(2));  // 1: occupies the instance
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Priority(1));  // 2: t = 0, times out at 1000
  h.Advance(500);
  h.Submit(Priority(1));  // 3
  h.Submit(Priority(2));  // 4
  h.Submit(Priority(1));  // 5
  h.Advance(500);
  // 2 timed out under DELAY: it is not failed, it moves behind 3 and 5 but stays ahead of 4.
  h.ExpectQuiet();
  CHECK_EQ(h.scheduler().Queued(), size_t{4});
  h.engine().Open();
  std::vector<Completion> done = h.Wait(5);
  CHECK_EQ(CodesOf(done), std::vector<StatusCode>(5, StatusCode::kOk));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {3}, {5}, {2}, {4}}));
  CHECK_EQ(h.Failures(FailureReason::kRejected), uint64_t{0});
  h.Finish();
}

// ---- 4. preserve_ordering ---------------------------------------------------------------------

// Submits 1 and 2 to two idle gated instances; returns {engine of 1, engine of 2}.
std::pair<GatedEngine*, GatedEngine*> StartOnTwoInstances(Harness& h,
                                                          Location where = PYSERVER_CALLER) {
  GatedEngine& e0 = h.engine(0);
  GatedEngine& e1 = h.engine(1);
  h.Submit();
  CHECK_AT(where, WaitUntil([&] { return e0.entered() + e1.entered() == 1; }));
  GatedEngine* first = e0.entered() == 1 ? &e0 : &e1;
  GatedEngine* second = first == &e0 ? &e1 : &e0;
  h.Submit();
  CHECK_AT(where, second->WaitEntered(1));
  CHECK_EQ_AT(where, first->batch_ids(), (std::vector<Ids>{{1}}));
  CHECK_EQ_AT(where, second->batch_ids(), (std::vector<Ids>{{2}}));
  return {first, second};
}

TEST_CASE(PreserveOrderingHoldsLaterCompletions) {
  SchedulerOptions options = Options(8, 0);
  options.preserve_ordering = true;
  Harness h(options, Gated(2));
  auto [first, second] = StartOnTwoInstances(h);
  second->Release(1);  // 2 finishes before 1
  // Barrier: request 3 can only start on 2's instance once 2's OnBatchDone has returned, and
  // that hands 2's completion on before it frees the instance. So here 2's completion has been
  // delivered to the sequencer, which must hold it back.
  h.Submit();
  CHECK(second->WaitEntered(2));
  CHECK(h.DrainNow().empty());
  first->Release(1);
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{1, 2}));
  second->Release(1);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{3}));
  h.Finish();
}

TEST_CASE(WithoutPreserveOrderingCompletionsLeaveWhenDone) {
  // The negative control of PreserveOrderingHoldsLaterCompletions: same steps, no ordering.
  Harness h(Options(8, 0), Gated(2));
  auto [first, second] = StartOnTwoInstances(h);
  second->Release(1);
  h.Submit();
  CHECK(second->WaitEntered(2));
  CHECK_EQ(IdsOf(h.DrainNow()), (Ids{2}));
  first->Release(1);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{1}));
  second->Release(1);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{3}));
  h.Finish();
}

TEST_CASE(PreserveOrderingAcrossPriorities) {
  SchedulerOptions options = Options(1, 0);
  options.preserve_ordering = true;
  options.priority_levels = 2;
  options.default_priority_level = 2;
  Harness h(options, Gated(1));
  h.Submit(Priority(2));  // 1: occupies the instance
  CHECK(h.engine().WaitEntered(1));
  h.Submit(Priority(2));  // 2
  h.Submit(Priority(1));  // 3: runs before 2
  h.Submit(Priority(2));  // 4
  h.Submit(Priority(2));  // 5: cancelled below
  // A cancellation's completion is ordered too: it waits behind 1..4.
  CHECK(h.scheduler().Cancel(5));
  CHECK(h.DrainNow().empty());

  h.engine().Release(1);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{1}));
  CHECK(h.engine().WaitEntered(2));  // 3, by priority
  h.engine().Release(1);
  CHECK(h.engine().WaitEntered(3));  // 2: so 3's OnBatchDone has delivered (see above)
  CHECK(h.DrainNow().empty());       // 3 is done but 2 came first
  h.engine().Release(1);
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{2, 3}));
  CHECK(h.engine().WaitEntered(4));
  h.engine().Release(1);
  std::vector<Completion> last = h.Wait(2);
  CHECK_EQ(IdsOf(last), (Ids{4, 5}));
  CHECK_EQ(CodesOf(last), (std::vector<StatusCode>{StatusCode::kOk, StatusCode::kCancelled}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {3}, {2}, {4}}));
  h.Finish();
}

// ---- 5. Cancellation --------------------------------------------------------------------------

TEST_CASE(CancelQueuedRequest) {
  Harness h(Options(8, 0), Gated(1));
  h.Submit();  // 1: running
  CHECK(h.engine().WaitEntered(1));
  h.Submit();  // 2
  h.Submit();  // 3: cancelled
  h.Submit();  // 4
  CHECK(h.scheduler().Cancel(3));
  // Answered inside Cancel: no waiting.
  std::vector<Completion> cancelled = h.DrainNow();
  CHECK_EQ(IdsOf(cancelled), (Ids{3}));
  CHECK_EQ(cancelled[0].status.code(), StatusCode::kCancelled);
  CHECK_CONTAINS(cancelled[0].status.message(), "model 'm'");
  CHECK(!h.scheduler().Cancel(3));    // already answered
  CHECK(!h.scheduler().Cancel(1));    // running: it finishes
  CHECK(!h.scheduler().Cancel(999));  // unknown
  CHECK_EQ(h.scheduler().Queued(), size_t{2});
  CHECK_EQ(h.Failures(FailureReason::kCanceled), uint64_t{1});

  h.engine().Open();
  std::vector<Completion> done = h.Wait(3);
  CHECK_EQ(IdsOf(done), (Ids{1, 2, 4}));
  CHECK_EQ(CodesOf(done), std::vector<StatusCode>(3, StatusCode::kOk));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {2, 4}}));  // 3 never ran
  CHECK_EQ(h.Failures(FailureReason::kCanceled), uint64_t{1});
  CHECK_EQ(h.Stats().fail.count, uint64_t{1});
  h.Finish();
}

// Regression (found by this test, fixed): Scheduler::Cancel took a request out of the queue
// without waking the batcher. A cancellation can make a waiting group ready (the requests left
// now have a preferred size), so Cancel wakes the batcher as Submit does.
TEST_CASE(CancelWakesTheBatcher) {
  SchedulerOptions options = Options(8, kLongDelayUs);
  options.preferred_batch_sizes = {3};
  Harness h(options, Ungated());
  h.Submit(Rows(1));  // 1
  h.Submit(Rows(1));  // 2
  h.Submit(Rows(2));  // 3: prefixes of 1, 2 and 4 rows, none preferred
  h.ExpectQuiet();
  CHECK(h.scheduler().Cancel(2));
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{2}));
  // 1 + 3 = 3 rows, a preferred size: ready now, with an idle instance.
  std::vector<Completion> ran = h.TryWait(2, std::chrono::milliseconds(10000));
  if (ran.empty()) {
    // Tell a missed wake-up from a wrong decision: AdvanceClock(0) only wakes the batcher.
    h.Advance(0);
    const bool woken = h.TryWait(2, kWait).size() == 2;
    CHECK_MSG(false, "the batch that Cancel made ready did not go"
                         << (woken ? "; AdvanceClock(0), a bare wake-up, sent it: Cancel did not "
                                     "wake the batcher"
                                   : ", not even after a wake-up"));
  }
  CHECK_EQ(IdsOf(ran), (Ids{1, 3}));
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1, 3}}));
  h.Finish();
}

// ---- 6. Shape groups --------------------------------------------------------------------------

TEST_CASE(ShapeGroupsStandSideBySide) {
  SchedulerOptions options = Options(8, kLongDelayUs, -1);
  options.preferred_batch_sizes = {2};
  Harness h(options, Ungated());
  h.Submit(Width(3));  // 1: [1, 3], waits for its delay
  h.Submit(Width(5));  // 2: [1, 5]
  h.ExpectQuiet();
  h.Submit(Width(5));  // 3: [1, 5] x 2 is a preferred batch; the older [1, 3] does not block it
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{2, 3}));
  CHECK_EQ(h.scheduler().Queued(), size_t{1});
  h.Advance(kLongDelayUs);
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{1}));
  std::vector<RanBatch> batches = h.engine().batches();
  CHECK_EQ(batches.size(), size_t{2});
  CHECK_EQ(batches[0].shape, (Shape{2, 5}));
  CHECK_EQ(batches[0].ids, (Ids{2, 3}));
  CHECK_EQ(batches[1].shape, (Shape{1, 3}));
  CHECK_EQ(batches[1].ids, (Ids{1}));
  h.Finish();
}

TEST_CASE(MixedShapesNeverShareABatch) {
  Harness h(Options(4, kLongDelayUs, -1), Ungated());
  h.scheduler().Hold(9);
  const int64_t widths[] = {2, 3, 2, 4, 3, 2, 2, 3, 2};  // ids 1..9
  for (int64_t width : widths) h.Submit(Width(width));
  // Width 2 (1, 3, 6, 7) fills a batch of 4 at once; 9, also width 2, is left for later.
  CHECK_EQ(IdsOf(h.Wait(4)), (Ids{1, 3, 6, 7}));
  h.scheduler().Hold(0);
  h.ExpectQuiet();
  h.Advance(kLongDelayUs);
  // Every group is past its delay; they go in the order of their first request.
  CHECK_EQ(IdsOf(h.Wait(5)), (Ids{2, 5, 8, 4, 9}));
  std::vector<RanBatch> batches = h.engine().batches();
  CHECK_EQ(batches.size(), size_t{4});
  const std::vector<Shape> shapes = {{4, 2}, {3, 3}, {1, 4}, {1, 2}};
  const std::vector<Ids> ids = {{1, 3, 6, 7}, {2, 5, 8}, {4}, {9}};
  for (size_t i = 0; i < batches.size() && i < shapes.size(); ++i) {
    CHECK_EQ(batches[i].shape, shapes[i]);
    CHECK_EQ(batches[i].ids, ids[i]);
  }
  h.Finish();
}

// ---- 7. Several instances ---------------------------------------------------------------------

TEST_CASE(TwoInstancesRunAtTheSameTime) {
  Harness h(Options(2, kLongDelayUs), Gated(2));
  GatedEngine& e0 = h.engine(0);
  GatedEngine& e1 = h.engine(1);
  for (int i = 0; i < 4; ++i) h.Submit();  // two full batches
  // Both engines are inside Execute at once, neither released.
  CHECK(WaitUntil([&] { return e0.running() == 1 && e1.running() == 1; }));
  std::vector<Ids> ran = {e0.batch_ids().at(0), e1.batch_ids().at(0)};
  if (ran[0] != Ids{1, 2}) std::swap(ran[0], ran[1]);
  CHECK_EQ(ran, (std::vector<Ids>{{1, 2}, {3, 4}}));
  CHECK(h.DrainNow().empty());
  e0.Release(1);
  e1.Release(1);
  std::vector<Completion> done = h.Wait(4);
  CHECK_EQ(CodesOf(done), std::vector<StatusCode>(4, StatusCode::kOk));
  CHECK_EQ(e0.entered() + e1.entered(), size_t{2});
  h.Finish();
}

// ---- 8. Latency target ------------------------------------------------------------------------

// A model whose batches take a + b * rows microseconds on the scheduler's (manual) clock: the
// engine advances it inside Execute, and the instance measures execution on that clock.
constexpr int64_t kTargetUs = 1000;  // T; T/2 = 500 us is the execution budget
constexpr int64_t kFixedUs = 100;    // a
constexpr int64_t kPerRowUs = 50;    // b
constexpr int64_t kLatencyMax = 16;

double ModelUs(int64_t rows) { return static_cast<double>(kFixedUs + kPerRowUs * rows); }

SchedulerOptions LatencyOptions() {
  SchedulerOptions options = Options(kLatencyMax, 0);
  options.latency_target_us = kTargetUs;
  return options;
}

void TimeExecution(Harness& h) {
  Scheduler* scheduler = &h.scheduler();
  h.engine().set_on_execute([scheduler](int64_t rows) {
    // Cannot check here (a worker thread); a failure would show as wrong estimates.
    (void)scheduler->AdvanceClock(kFixedUs + kPerRowUs * rows);
  });
}

// The largest batch whose estimate fits in T/2, from the public estimates.
int64_t LargestWithinHalfTarget(Scheduler& scheduler) {
  int64_t largest = 1;
  for (int64_t rows = 1; rows <= kLatencyMax; ++rows) {
    if (scheduler.EstimatedExecutionUs(rows) <= kTargetUs / 2.0) largest = rows;
  }
  return largest;
}

// The estimator learns a batch after its completion has gone out (OnBatchDone delivers first):
// wait for it rather than race it.
void WaitEstimate(Harness& h, int64_t rows, double us, Location where = PYSERVER_CALLER) {
  const bool learned = WaitUntil([&] { return h.scheduler().EstimatedExecutionUs(rows) == us; });
  CHECK_MSG_AT(where, learned,
               "EstimatedExecutionUs(" << rows << ") is "
                                       << h.scheduler().EstimatedExecutionUs(rows) << ", not "
                                       << us);
}

// Runs lone requests of 1, 2, 4 and 8 rows, each after an idle second: the arrival rate is
// known to be low, so each goes at once, with no AdvanceClock from the test. Checks what the
// estimator learns on the way; leaves est(1, 2, 4, 8) = model and LatencyBatchLimit() = 8.
void LearnExecutionTimes(Harness& h, Location where = PYSERVER_CALLER) {
  Scheduler& s = h.scheduler();
  // Nothing measured: every estimate is 0 and every size fits.
  CHECK_EQ_AT(where, s.EstimatedExecutionUs(4), 0.0);
  CHECK_EQ_AT(where, s.LatencyBatchLimit(), kLatencyMax);
  struct Step {
    int64_t rows;
    std::vector<std::pair<int64_t, double>> estimates;  // (rows, us) after the step
    int64_t limit;
  };
  const std::vector<Step> steps = {
      // One size measured: others proportional to it. 3 x 150 = 450 fits, 4 x 150 does not.
      {1, {{1, 150}, {2, 300}, {4, 600}}, 3},
      // Beyond the largest measured size, proportional to it: 5 x 100 = 500 just fits.
      {2, {{1, 150}, {2, 200}, {3, 300}, {6, 600}}, 5},
      // Between measured sizes, linear: est(3) = 250 = a + 3b; est(6) = 6 x 75 = 450.
      {4, {{3, 250}, {4, 300}, {6, 450}, {7, 525}, {8, 600}}, 6},
      {8, {{6, 400}, {8, 500}, {9, 562.5}, {16, 1000}}, 8},
  };
  for (const Step& step : steps) {
    // The first request is alone and the rate unknown; later ones follow an idle second.
    if (step.rows > 1) h.Advance(kLongDelayUs, where);
    const uint64_t id = h.Submit(Rows(step.rows));
    CHECK_EQ_AT(where, IdsOf(h.Wait(1, kWait, where)), (Ids{id}));
    WaitEstimate(h, step.rows, ModelUs(step.rows), where);
    for (const auto& estimate : step.estimates) {
      CHECK_EQ_AT(where, s.EstimatedExecutionUs(estimate.first), estimate.second);
    }
    CHECK_EQ_AT(where, s.LatencyBatchLimit(), step.limit);
    CHECK_EQ_AT(where, s.LatencyBatchLimit(), LargestWithinHalfTarget(s));
  }
}

TEST_CASE(LatencyTargetLearnsExecutionTimesAndLimitsBatches) {
  Harness h(LatencyOptions(), Ungated());
  TimeExecution(h);
  LearnExecutionTimes(h);
  // A request of 8 rows went whole although the limit was 6 then: one request is never split.
  CHECK_EQ(h.engine().batches().back().rows(), int64_t{8});

  // Ten single-row requests at once: the batch stops at the limit (8), not max_batch_size (16).
  h.Advance(kLongDelayUs);
  h.scheduler().Hold(10);
  for (int i = 0; i < 10; ++i) h.Submit();
  CHECK_EQ(IdsOf(h.Wait(8)), (Ids{5, 6, 7, 8, 9, 10, 11, 12}));
  h.scheduler().Hold(0);
  CHECK_EQ(IdsOf(h.Wait(2)), (Ids{13, 14}));
  std::vector<RanBatch> batches = h.engine().batches();
  CHECK_EQ(batches.size(), size_t{6});
  CHECK_EQ(batches[4].rows(), int64_t{8});
  CHECK_EQ(batches[5].rows(), int64_t{2});
  h.Finish();
}

TEST_CASE(LatencyTargetWaitsAtMostHalfTheTarget) {
  {
    // A burst (two arrivals at the same instant: the rate is infinite) waits for more rows, but
    // not beyond T/2.
    Harness h(LatencyOptions(), Ungated());
    TimeExecution(h);
    h.scheduler().Hold(2);  // else the first would go alone at once (rate unknown)
    h.Submit();
    h.Submit();
    h.Advance(kTargetUs / 2 - 1);
    h.ExpectQuiet();
    h.Advance(1);
    CHECK_EQ(IdsOf(h.Wait(2)), (Ids{1, 2}));
    CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1, 2}}));
    h.Finish();
  }
  {
    // A known rate: the group goes once fewer than one row is expected in the time left.
    Harness h(LatencyOptions(), Ungated());
    TimeExecution(h);
    h.Submit();  // 1: t = 0, alone, rate unknown: at once; its execution moves t to 150
    CHECK_EQ(IdsOf(h.Wait(1)), (Ids{1}));
    // 2 at t = 150: 150 us per row since 1. 3 at the same instant: the average gap becomes
    // 150 - 150/8 = 131.25 us per row. Their group's T/2 ends at 650: it is ready when less
    // than 131.25 us are left, i.e. after t = 518.75.
    h.Submit();
    h.Submit();
    h.ExpectQuiet();
    h.Advance(518 - 150);  // 132 us left: 1.006 rows expected
    h.ExpectQuiet();
    h.Advance(1);  // 131 us left: 0.998 rows expected
    CHECK_EQ(IdsOf(h.Wait(2)), (Ids{2, 3}));
    CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}, {2, 3}}));
    h.Finish();
  }
}

TEST_CASE(LatencyTargetLostUsesMaxBatchSize) {
  Harness h(LatencyOptions(), Ungated());
  TimeExecution(h);
  LearnExecutionTimes(h);  // requests 1..4; limit 8

  // Twelve requests that have waited 999 us (< T): the limit holds, 8 then 4. (Hold(13) keeps
  // the batcher off them until Hold(0).)
  h.Advance(kLongDelayUs);
  h.scheduler().Hold(13);
  for (int i = 0; i < 12; ++i) h.Submit();  // 5..16
  h.Advance(kTargetUs - 1);
  h.ExpectQuiet();
  h.scheduler().Hold(0);
  CHECK_EQ(h.Wait(12).size(), size_t{12});
  std::vector<RanBatch> batches = h.engine().batches();
  CHECK_EQ(batches.size(), size_t{6});
  CHECK_EQ(batches[4].ids, (Ids{5, 6, 7, 8, 9, 10, 11, 12}));
  CHECK_EQ(batches[5].ids, (Ids{13, 14, 15, 16}));

  // Twelve that have waited T: the target is lost, the limit is max_batch_size: one batch.
  h.Advance(kLongDelayUs);
  h.scheduler().Hold(13);
  for (int i = 0; i < 12; ++i) h.Submit();  // 17..28
  h.Advance(kTargetUs);
  h.scheduler().Hold(0);
  CHECK_EQ(h.Wait(12).size(), size_t{12});
  batches = h.engine().batches();
  CHECK_EQ(batches.size(), size_t{7});
  CHECK_EQ(batches[6].rows(), int64_t{12});
  CHECK_EQ(batches[6].ids.front(), uint64_t{17});
  WaitEstimate(h, 12, ModelUs(12));
  CHECK_EQ(h.scheduler().LatencyBatchLimit(), int64_t{8});  // est(9) = 550 > 500
  h.Finish();
}

// Regression (found by this test, fixed): the rule makes a group ready "at once when the rows
// expected to arrive in the time left (rate x time) are fewer than one": with a gap of g per row
// that happens at (oldest + T/2) - g, and GroupReady now reports that moment as the group's
// deadline. The manual clock would hide a miss (every AdvanceClock wakes the batcher), so this
// test needs real time: a 0.6 s arrival gap made by sleeping, then a check with 0.3 s of margin
// either side of the rule's 0.4 s.
TEST_CASE(LatencyTargetRealClockReleasesWhenNoMoreRowsAreExpected) {
  SchedulerOptions options = LatencyOptions();
  options.latency_target_us = 2000000;  // T/2 = 1 s
  options.manual_clock = false;
  Harness h(options, Ungated());
  const auto first = RealClock::now();
  h.Submit();  // alone, rate unknown: at once
  CHECK_EQ(IdsOf(h.Wait(1)), (Ids{1}));
  std::this_thread::sleep_until(first + std::chrono::milliseconds(600));  // the arrival gap
  const auto submitted = RealClock::now();
  h.Submit();  // 0.6 s per row: 1.67 rows expected in T/2, so it waits; < 1 from 0.4 s on
  CHECK_EQ(IdsOf(h.Wait(1, std::chrono::milliseconds(2000))), (Ids{2}));
  const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(RealClock::now() -
                                                                            submitted);
  CHECK_MSG(waited.count() >= 300, "went after " << waited.count() << " ms: it did not wait");
  CHECK_MSG(waited.count() < 700, "went after " << waited.count()
                                                << " ms; the rule makes it ready at ~400 ms");
  h.Finish();
}

// ---- 9. Stop ----------------------------------------------------------------------------------

TEST_CASE(StopFailsQueuedAndFinishesRunning) {
  Harness h(Options(8, 0), Gated(1));
  h.Submit();  // 1: running
  CHECK(h.engine().WaitEntered(1));
  h.Submit();  // 2
  h.Submit();  // 3
  std::promise<void> stopped;
  std::future<void> stop_done = stopped.get_future();
  std::thread stopper([&] {
    h.scheduler().Stop();
    stopped.set_value();
  });
  // Whatever happens below, the stopper is joined before the harness goes.
  struct Joiner {
    std::thread& thread;
    GatedEngine& engine;
    ~Joiner() {
      engine.Open();
      thread.join();
    }
  } joiner{stopper, h.engine()};

  // The queued fail at once, while 1 is still inside the engine.
  std::vector<Completion> failed = h.Wait(2);
  CHECK_EQ(IdsOf(failed), (Ids{2, 3}));
  for (const Completion& c : failed) {
    CHECK_EQ(c.status.code(), StatusCode::kUnavailable);
    CHECK_EQ(c.status.message(), std::string("model 'm' is shutting down"));
  }
  CHECK_EQ(h.engine().running(), size_t{1});
  CHECK(stop_done.wait_for(kQuiet) == std::future_status::timeout);  // it waits for 1

  h.Submit();  // 4: after Stop() began, refused at once
  std::vector<Completion> late = h.DrainNow();
  CHECK_EQ(IdsOf(late), (Ids{4}));
  CHECK_EQ(late[0].status.code(), StatusCode::kUnavailable);

  h.engine().Release(1);
  CHECK(stop_done.wait_for(kWait) == std::future_status::ready);
  // Stop() returned: the running batch has finished and its completion is out.
  std::vector<Completion> finished = h.DrainNow();
  CHECK_EQ(IdsOf(finished), (Ids{1}));
  CHECK_EQ(finished[0].status.code(), StatusCode::kOk);
  CHECK_EQ(h.engine().batch_ids(), (std::vector<Ids>{{1}}));
  CHECK_EQ(h.Failures(FailureReason::kOther), uint64_t{3});
  CHECK(h.Finish().empty());  // a second Stop() is a no-op
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
