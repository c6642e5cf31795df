#include "core/stats.h"

#include <algorithm>

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

Stats::Stats(int64_t max_batch_size)
    : max_size_(std::max<int64_t>(max_batch_size, 1)),
      by_size_(new BatchSizeCounters[static_cast<size_t>(max_size_) + 1]) {}

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
}

void Stats::RecordFailures(uint64_t count, uint64_t ns) { fail_.Add(count, ns); }

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
  return s;
}

std::vector<int64_t> Stats::BatchSizes() const {
  std::lock_guard<std::mutex> lock(history_mu_);
  return std::vector<int64_t>(history_.begin(), history_.end());
}

}  // namespace core
}  // namespace pyserver
