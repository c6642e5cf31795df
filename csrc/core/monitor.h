// Monitor: what a model sees and says, measured on the batch buffers the core already holds.
//
// Per sampled batch (every sample_every-th batch an instance runs), after the scatter succeeded
// and before the completions leave (so whoever receives an answer finds its batch counted), the
// instance's worker thread measures each monitored tensor in the batch's own buffers: the
// gathered input (pinned host memory on a GPU instance) and the output the requests get views
// of. No copy, no Python, no GIL (monitor_kernels.h has the loops). What it measures:
//   - inputs: value histograms (one for all values, or one per position of the tensor's dims),
//     NaN and +-Inf counts; BYTES inputs: element counts and a histogram of their lengths;
//   - outputs: class counts (integer outputs), or a value histogram (every value, or, with
//     `top`, each row's largest score, whose position is counted as the row's class).
// The batch's counts are folded, under a lock held for a few hundred additions, into the totals
// since the monitor started (what Prometheus reads: counters only grow) and into the current
// interval of a ring that covers the window: `intervals` slots of window/intervals each, a slot
// cleared when time reaches it again, so old data ages out without a rescan. The window is the
// slots of the last `intervals` interval numbers: between (intervals-1)/intervals of the window
// and the whole window, ending now.
//
// Drift: an input's reference histogram comes from a sample of training data (SetReference, at
// load) or, when asked, from the monitor's first window after Start; Snapshot compares the
// current window against it (population stability index, per feature and pooled).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/engine.h"
#include "core/model_spec.h"
#include "core/monitor_kernels.h"
#include "core/status.h"

namespace pyserver {
namespace core {

struct MonitorTensorOptions {
  std::string name;
  bool input = true;            // a model input; else an output
  std::vector<double> buckets;  // histogram bounds, finite and strictly increasing
  bool per_feature = false;     // inputs: one histogram per position of dims
  int64_t classes = 0;          // outputs: class counts for integer values in [0, classes)
  bool top = false;             // float outputs: each row's largest score and its position
  bool reference_first_window = false;  // inputs: the first window is the drift reference
};

struct MonitorOptions {
  int64_t sample_every = 1;  // measure every Nth batch (1 = every batch)
  int64_t window_ns = 300LL * 1000 * 1000 * 1000;
  int64_t intervals = 10;  // the window's ring slots
  std::vector<MonitorTensorOptions> tensors;  // none: no monitor
};

// One tensor's counts over a span.
struct MonitorCounts {
  ValueCounts values;
  std::vector<uint64_t> classes;  // classes (or the top's group) + 1: the last = outside

  void Add(const MonitorCounts& other);
};

struct MonitorTensorSnapshot {
  MonitorTensorOptions options;
  DataType dtype = DataType::kInvalid;
  size_t features = 1;       // histograms per span (1 unless per_feature)
  int64_t class_count = 0;   // classes counted (the top's group size for `top`); 0 = none
  MonitorCounts total;       // since Start
  MonitorCounts window;      // the sliding window
  MonitorCounts reference;   // when has_reference
  bool has_reference = false;
  std::string reference_source;  // "file", "first_window" (once complete), "" = none (yet)
  std::vector<double> psi;       // per feature: window against reference (NaN: no data)
  double psi_pooled = 0;         // every feature's values as one histogram
};

struct MonitorSnapshot {
  bool running = false;
  int64_t started_ns = 0;  // the scheduler's clock at Start
  int64_t now_ns = 0;
  int64_t window_ns = 0;
  int64_t interval_ns = 0;
  int64_t sample_every = 1;
  uint64_t batches_seen = 0;     // batches run since Start
  uint64_t batches_sampled = 0;  // ... of which measured
  uint64_t batches_failed = 0;   // measurements that failed (out of memory): not counted
  std::vector<MonitorTensorSnapshot> tensors;  // in the options' order
};

class Monitor {
 public:
  static constexpr size_t kMaxBuckets = 64;        // bounds per histogram
  static constexpr size_t kMaxCells = 65536;       // features * (bounds + 1) per tensor
  static constexpr int64_t kMaxClasses = 65536;
  static constexpr int64_t kMaxIntervals = 1000;

  // INVALID_ARGUMENT naming the tensor and what is wrong with its options for `model`.
  static Status Check(const MonitorOptions& options, const ModelSpec& model);
  // nullptr (and OK) when options.tensors is empty. `model` and `clock` outlive the monitor.
  static Status Create(const MonitorOptions& options, const ModelSpec& model, const Clock* clock,
                       std::unique_ptr<Monitor>* monitor);

  // Starts (or restarts) counting from now: every count, the ring and a first-window
  // reference are cleared; a reference from a file is kept. Until the first Start, batches are
  // not measured (a model's warmup runs before it is READY and Start is called).
  void Start();

  // On an instance's worker thread, after a successful scatter. Never fails the batch: a
  // measurement that throws (std::bad_alloc) is counted in batches_failed and dropped.
  void Record(const BatchInputs& inputs, const BatchOutputs& outputs);

  // The reference sample of input tensor `tensor` (an index into options.tensors): `bytes` of
  // `dtype` values (rows of the input's non-batch elements). INVALID_ARGUMENT when the tensor
  // is not a numeric input, or the size does not make whole rows.
  Status SetReference(size_t tensor, DataType dtype, const uint8_t* data, size_t bytes);

  MonitorSnapshot Snapshot() const;

  const MonitorOptions& options() const { return options_; }

 private:
  struct Tensor {
    MonitorTensorOptions options;
    size_t index = 0;  // into the model's inputs or outputs
    DataType dtype = DataType::kInvalid;
    size_t features = 1;
    size_t class_count = 0;
    ValueHistogrammer histogram;

    explicit Tensor(std::vector<double> bounds) : histogram(std::move(bounds)) {}
  };

  struct Interval {
    int64_t number = -1;  // which interval since Start it holds; -1 = none
    std::vector<MonitorCounts> tensors;
  };

  Monitor(const MonitorOptions& options, const ModelSpec& model, const Clock* clock);

  // Zeroed counts shaped for tensor t.
  MonitorCounts Empty(size_t t) const;
  // Worker thread: tensor t of this batch into `out` (reset first).
  void Measure(size_t t, const BatchInputs& inputs, const BatchOutputs& outputs,
               MonitorCounts* out) const;
  // mu_ must be held: the ring slot for time now_ns, cleared if it held an older interval.
  Interval& SlotLocked(int64_t now_ns);
  // mu_ must be held: the interval number of now_ns.
  int64_t IntervalLocked(int64_t now_ns) const;

  const MonitorOptions options_;
  const Clock* clock_;
  const int64_t interval_ns_;
  std::vector<Tensor> tensors_;

  std::atomic<bool> running_{false};
  std::atomic<uint64_t> seen_{0};
  std::atomic<uint64_t> failed_{0};

  mutable std::mutex mu_;  // guards everything below; held for additions and copies only
  int64_t started_ns_ = 0;
  uint64_t sampled_ = 0;
  std::vector<MonitorCounts> totals_;
  std::vector<Interval> ring_;
  std::vector<MonitorCounts> first_window_;  // while the first window runs, then frozen
  std::vector<MonitorCounts> file_reference_;
  std::vector<bool> has_file_reference_;
};

}  // namespace core
}  // namespace pyserver
