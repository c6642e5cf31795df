// Statistics, Triton-shaped: counters that mean what Triton's mean, so dashboards carry over,
// plus histograms Triton does not have.
//
// Updated by workers once per batch (request counters grow by the batch's request count and the
// sum of its requests' durations, which equals updating them per request) and once per request
// for the histograms, read by the bindings with relaxed loads when somebody asks (/stats, a
// Prometheus scrape). No lock on the hot path except the batch-size history, a test hook.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

namespace pyserver {
namespace core {

struct DurationCounter {
  std::atomic<uint64_t> count{0};
  std::atomic<uint64_t> ns{0};

  void Add(uint64_t n, uint64_t duration_ns) {
    count.fetch_add(n, std::memory_order_relaxed);
    ns.fetch_add(duration_ns, std::memory_order_relaxed);
  }
};

struct Duration {
  uint64_t count = 0;
  uint64_t ns = 0;
};

// Why a request failed, with Triton's metric label names (nv_inference_request_failure{reason}).
enum class FailureReason : int {
  kRejected = 0,  // the scheduler refused it: queue full, or its queue timeout ran out
  kCanceled = 1,  // the client went away before it ran
  kBackend = 2,   // the engine (or the gather/scatter around it) failed
  kOther = 3,     // anything else: a malformed request, the model shutting down
};
constexpr size_t kFailureReasons = 4;
const char* FailureReasonName(FailureReason reason);

struct HistogramSnapshot {
  std::vector<uint64_t> bounds;  // inclusive upper bounds, ascending; +Inf after the last
  std::vector<uint64_t> counts;  // per bucket, not cumulative; bounds.size() + 1 entries
  uint64_t sum = 0;
  uint64_t count = 0;  // the sum of counts
};

// A fixed-bucket histogram of non-negative integers (nanoseconds, rows), lock-free.
class Histogram {
 public:
  explicit Histogram(std::vector<uint64_t> bounds);
  void Observe(uint64_t value);
  HistogramSnapshot Snapshot() const;

 private:
  const std::vector<uint64_t> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1
  std::atomic<uint64_t> sum_{0};
};

// Bucket bounds: durations from 25 us (sub-millisecond CPU models) to 30 s (long GPU batches);
// batch sizes in powers of two up to the largest max_batch_size.
std::vector<uint64_t> DurationBucketsNs();
std::vector<uint64_t> BatchSizeBuckets();

struct BatchSizeStats {
  int64_t batch_size = 0;
  Duration compute_input, compute_infer, compute_output;  // count = batches of this size
};

struct StatsSnapshot {
  uint64_t inference_count = 0;  // rows executed
  uint64_t execution_count = 0;  // batches executed
  int64_t last_inference_ms = 0;  // wall clock, ms since the Unix epoch; 0 = never
  Duration success, fail, queue, compute_input, compute_infer, compute_output;
  uint64_t fail_by_reason[kFailureReasons] = {};  // indexed by FailureReason
  std::vector<BatchSizeStats> batch_stats;        // ascending batch size, sizes seen only
  int64_t pending = 0;                            // queued or executing
  // Every answered request (success or failure); queue = executed requests' time in the
  // queue; compute = each batch's gather + execute + scatter; batch_size = rows per batch.
  HistogramSnapshot request_duration, queue_duration, compute_duration, batch_size;
};

// One successful batch, summed over its requests.
struct BatchRecord {
  int64_t rows = 0;
  uint64_t requests = 0;
  uint64_t queue_ns = 0;    // sum over requests of (batch start - queued)
  uint64_t success_ns = 0;  // sum over requests of (completion push - submit)
  uint64_t compute_input_ns = 0;
  uint64_t compute_infer_ns = 0;
  uint64_t compute_output_ns = 0;
};

class Stats {
 public:
  // Batch sizes 1..max(max_batch_size, 1) get their own counters.
  explicit Stats(int64_t max_batch_size);

  // Per executed request, before its batch's RecordSuccess: the histograms' view of it.
  void ObserveRequest(uint64_t request_ns, uint64_t queue_ns) {
    request_duration_.Observe(request_ns);
    queue_duration_.Observe(queue_ns);
  }
  void RecordSuccess(const BatchRecord& batch);
  // One request failed after `ns` for `reason`.
  void RecordFailure(FailureReason reason, uint64_t ns);
  // Every executed batch, successful or not (the test hook's history).
  void RecordBatchExecuted(int64_t rows);

  void AddPending(int64_t delta) { pending_.fetch_add(delta, std::memory_order_acq_rel); }
  int64_t pending() const { return pending_.load(std::memory_order_acquire); }

  StatsSnapshot Snapshot() const;
  std::vector<int64_t> BatchSizes() const;

 private:
  static constexpr size_t kBatchSizeHistory = 100000;

  struct BatchSizeCounters {
    DurationCounter compute_input, compute_infer, compute_output;
  };

  std::atomic<uint64_t> inference_count_{0};
  std::atomic<uint64_t> execution_count_{0};
  std::atomic<int64_t> last_inference_ms_{0};
  DurationCounter success_, fail_, queue_, compute_input_, compute_infer_, compute_output_;
  std::atomic<uint64_t> fail_by_reason_[kFailureReasons] = {};
  const int64_t max_size_;
  std::unique_ptr<BatchSizeCounters[]> by_size_;  // index = batch size, 1..max_size_
  std::atomic<int64_t> pending_{0};
  Histogram request_duration_, queue_duration_, compute_duration_, batch_size_;

  mutable std::mutex history_mu_;  // guards history_: one push per batch, a test hook
  std::deque<int64_t> history_;
};

}  // namespace core
}  // namespace pyserver
