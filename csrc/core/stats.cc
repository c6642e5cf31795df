#include "core/stats.h"

#include <algorithm>
#include <utility>

#include "core/clock.h"

namespace pyserver {
namespace core {
namespace {

Duration Load(const DurationCounter& counter) {
  Duration d;
  d.count = counter.count.load(std::memory_order_relaxed);
  d.ns = counter.ns.load(std::memory_order_relaxed);
  return d;
}

}  // namespace

const char* FailureReasonName(FailureReason reason) {
  switch (reason) {
    case FailureReason::kRejected:
      return "REJECTED";
    case FailureReason::kCanceled:
      return "CANCELED";
    case FailureReason::kBackend:
      return "BACKEND";
    case FailureReason::kOther:
      break;
  }
  return "OTHER";
}

std::vector<uint64_t> DurationBucketsNs() {
  constexpr uint64_t kUs = 1000;
  return {25 * kUs,     50 * kUs,      100 * kUs,     250 * kUs,      500 * kUs,
          1000 * kUs,   2500 * kUs,    5000 * kUs,    10000 * kUs,    25000 * kUs,
          50000 * kUs,  100000 * kUs,  250000 * kUs,  500000 * kUs,   1000000 * kUs,
          2500000 * kUs, 5000000 * kUs, 10000000 * kUs, 30000000 * kUs};
}

std::vector<uint64_t> BatchSizeBuckets() {
  std::vector<uint64_t> bounds;
  for (uint64_t size = 1; size <= 65536; size *= 2) bounds.push_back(size);
  return bounds;
}

Histogram::Histogram(std::vector<uint64_t> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(uint64_t value) {
  // The first bucket whose (inclusive) upper bound holds the value; past the end = +Inf.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot s;
  s.bounds = bounds_;
  s.counts.resize(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    s.count += s.counts[i];
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

Stats::Stats(int64_t max_batch_size)
    : max_size_(std::max<int64_t>(max_batch_size, 1)),
      by_size_(new BatchSizeCounters[static_cast<size_t>(max_size_) + 1]),
      request_duration_(DurationBucketsNs()),
      queue_duration_(DurationBucketsNs()),
      compute_duration_(DurationBucketsNs()),
      batch_size_(BatchSizeBuckets()) {}

void Stats::RecordSuccess(const BatchRecord& batch) {
  inference_count_.fetch_add(static_cast<uint64_t>(batch.rows), std::memory_order_relaxed);
  execution_count_.fetch_add(1, std::memory_order_relaxed);
  last_inference_ms_.store(SystemNowMs(), std::memory_order_relaxed);
  success_.Add(batch.requests, batch.success_ns);
  queue_.Add(batch.requests, batch.queue_ns);
  // As Triton does: every request of the batch is charged the batch's compute durations.
  compute_input_.Add(batch.requests, batch.compute_input_ns * batch.requests);
  compute_infer_.Add(batch.requests, batch.compute_infer_ns * batch.requests);
  compute_output_.Add(batch.requests, batch.compute_output_ns * batch.requests);
  if (batch.rows >= 1 && batch.rows <= max_size_) {
    BatchSizeCounters& size = by_size_[static_cast<size_t>(batch.rows)];
    size.compute_input.Add(1, batch.compute_input_ns);
    size.compute_infer.Add(1, batch.compute_infer_ns);
    size.compute_output.Add(1, batch.compute_output_ns);
  }
  compute_duration_.Observe(batch.compute_input_ns + batch.compute_infer_ns +
                            batch.compute_output_ns);
  batch_size_.Observe(static_cast<uint64_t>(batch.rows));
}

void Stats::RecordFailure(FailureReason reason, uint64_t ns) {
  fail_.Add(1, ns);
  fail_by_reason_[static_cast<size_t>(reason)].fetch_add(1, std::memory_order_relaxed);
  request_duration_.Observe(ns);
}

void Stats::RecordBatchExecuted(int64_t rows) {
  std::lock_guard<std::mutex> lock(history_mu_);
  history_.push_back(rows);
  if (history_.size() > kBatchSizeHistory) history_.pop_front();
}

StatsSnapshot Stats::Snapshot() const {
  StatsSnapshot s;
  s.inference_count = inference_count_.load(std::memory_order_relaxed);
  s.execution_count = execution_count_.load(std::memory_order_relaxed);
  s.last_inference_ms = last_inference_ms_.load(std::memory_order_relaxed);
  s.success = Load(success_);
  s.fail = Load(fail_);
  s.queue = Load(queue_);
  s.compute_input = Load(compute_input_);
  s.compute_infer = Load(compute_infer_);
  s.compute_output = Load(compute_output_);
  for (size_t i = 0; i < kFailureReasons; ++i) {
    s.fail_by_reason[i] = fail_by_reason_[i].load(std::memory_order_relaxed);
  }
  for (int64_t size = 1; size <= max_size_; ++size) {
    const BatchSizeCounters& counters = by_size_[static_cast<size_t>(size)];
    BatchSizeStats b;
    b.batch_size = size;
    b.compute_input = Load(counters.compute_input);
    b.compute_infer = Load(counters.compute_infer);
    b.compute_output = Load(counters.compute_output);
    if (b.compute_input.count > 0 || b.compute_infer.count > 0 || b.compute_output.count > 0) {
      s.batch_stats.push_back(b);
    }
  }
  s.pending = pending();
  s.request_duration = request_duration_.Snapshot();
  s.queue_duration = queue_duration_.Snapshot();
  s.compute_duration = compute_duration_.Snapshot();
  s.batch_size = batch_size_.Snapshot();
  return s;
}

std::vector<int64_t> Stats::BatchSizes() const {
  std::lock_guard<std::mutex> lock(history_mu_);
  return std::vector<int64_t>(history_.begin(), history_.end());
}

}  // namespace core
}  // namespace pyserver
