// LatencyEstimator: what the latency-target batcher knows of the model and of the load.
//
// Execution time per batch size: an exponentially weighted average (weight 1/8 for each new
// batch) of the measured time from gather to scatter, per size. A size not measured yet is
// estimated from its measured neighbours: linearly between the nearest smaller and larger,
// proportionally to rows beyond the largest (or below the smallest). Nothing measured: 0.
// Arrival rate: an exponentially weighted average (1/8) of the time between arrivals per row.
//
// Not thread-safe: the scheduler guards it with its lock.
#pragma once

#include <cstdint>
#include <map>

namespace pyserver {
namespace core {

class LatencyEstimator {
 public:
  explicit LatencyEstimator(int64_t max_batch_size) : max_batch_size_(max_batch_size) {}

  void RecordExecution(int64_t rows, int64_t ns);
  void RecordArrival(int64_t now_ns, int64_t rows);

  // Estimated execution time of a batch of `rows` rows, in ns (0 while nothing is measured).
  double ExecutionNs(int64_t rows) const;
  // Rows arriving per ns; 0 until two arrivals have been seen, infinity for a burst.
  double RowsPerNs() const;
  // The largest batch size (1..max_batch_size) whose estimated execution fits in budget_ns.
  int64_t LargestWithin(double budget_ns) const;

 private:
  const int64_t max_batch_size_;
  std::map<int64_t, double> execution_ns_;  // measured sizes only
  int64_t last_arrival_ns_ = -1;
  double gap_ns_per_row_ = -1;  // < 0: not measured yet
};

}  // namespace core
}  // namespace pyserver
