#include "core/latency_estimator.h"

#include <iterator>
#include <limits>

namespace pyserver {
namespace core {
namespace {
constexpr double kWeight = 1.0 / 8;
}  // namespace

void LatencyEstimator::RecordExecution(int64_t rows, int64_t ns) {
  if (rows < 1 || ns < 0) return;
  auto it = execution_ns_.find(rows);
  if (it == execution_ns_.end()) {
    execution_ns_.emplace(rows, static_cast<double>(ns));
  } else {
    it->second += kWeight * (static_cast<double>(ns) - it->second);
  }
}

void LatencyEstimator::RecordArrival(int64_t now_ns, int64_t rows) {
  if (last_arrival_ns_ >= 0 && rows >= 1) {
    const double gap = static_cast<double>(now_ns - last_arrival_ns_) / static_cast<double>(rows);
    gap_ns_per_row_ =
        gap_ns_per_row_ < 0 ? gap : gap_ns_per_row_ + kWeight * (gap - gap_ns_per_row_);
  }
  last_arrival_ns_ = now_ns;
}

double LatencyEstimator::ExecutionNs(int64_t rows) const {
  if (execution_ns_.empty()) return 0;
  auto above = execution_ns_.lower_bound(rows);
  if (above != execution_ns_.end() && above->first == rows) return above->second;
  if (above == execution_ns_.end()) {  // beyond the largest measured size
    auto largest = execution_ns_.rbegin();
    return largest->second * static_cast<double>(rows) / static_cast<double>(largest->first);
  }
  if (above == execution_ns_.begin()) {  // below the smallest measured size
    return above->second * static_cast<double>(rows) / static_cast<double>(above->first);
  }
  auto below = std::prev(above);
  const double t = static_cast<double>(rows - below->first) /
                   static_cast<double>(above->first - below->first);
  return below->second + t * (above->second - below->second);
}

double LatencyEstimator::RowsPerNs() const {
  if (gap_ns_per_row_ < 0) return 0;
  if (gap_ns_per_row_ == 0) return std::numeric_limits<double>::infinity();
  return 1.0 / gap_ns_per_row_;
}

int64_t LatencyEstimator::LargestWithin(double budget_ns) const {
  if (max_batch_size_ <= 1 || ExecutionNs(max_batch_size_) <= budget_ns) return max_batch_size_;
  // Estimates grow with rows (up to measurement noise), so a binary search finds the boundary.
  // Invariant: lo fits (or is 1, which always goes), hi does not.
  int64_t lo = 1, hi = max_batch_size_;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (ExecutionNs(mid) <= budget_ns) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace core
}  // namespace pyserver
