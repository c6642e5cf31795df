#include "core/monitor.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

namespace pyserver {
namespace core {
namespace {

const std::vector<TensorSpec>& Specs(const ModelSpec& model, bool input) {
  return input ? model.inputs : model.outputs;
}

// The index of tensor `name` among the model's inputs (or outputs); -1 when there is none.
int64_t FindTensor(const ModelSpec& model, bool input, const std::string& name) {
  const std::vector<TensorSpec>& specs = Specs(model, input);
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].name == name) return static_cast<int64_t>(i);
  }
  return -1;
}

// The product of dims when every one is fixed; -1 when one is -1 (or it overflows).
int64_t FixedElements(const Shape& dims) {
  int64_t elements = 0;
  for (int64_t dim : dims) {
    if (dim < 0) return -1;
  }
  return ElementCount(dims, 0, &elements) ? elements : -1;
}

Status CheckTensor(const MonitorTensorOptions& t, const ModelSpec& model,
                   const std::string& prefix) {
  const char* kind = t.input ? "input" : "output";
  const std::string what = prefix + kind + " '" + t.name + "': ";
  const int64_t index = FindTensor(model, t.input, t.name);
  if (index < 0) return Status::InvalidArgument(what + "the model has no such " + kind);
  const TensorSpec& spec = Specs(model, t.input)[static_cast<size_t>(index)];

  if (t.buckets.size() > Monitor::kMaxBuckets) {
    return Status::InvalidArgument(what + "at most " + std::to_string(Monitor::kMaxBuckets) +
                                   " buckets");
  }
  for (size_t k = 0; k < t.buckets.size(); ++k) {
    if (!std::isfinite(t.buckets[k]) || (k > 0 && !(t.buckets[k] > t.buckets[k - 1]))) {
      return Status::InvalidArgument(what + "buckets must be finite and strictly increasing");
    }
  }
  if (t.classes < 0 || t.classes > Monitor::kMaxClasses) {
    return Status::InvalidArgument(what + "classes must be from 0 to " +
                                   std::to_string(Monitor::kMaxClasses));
  }
  const size_t cells_per_feature = t.buckets.size() + 1;

  if (t.input) {
    if (t.classes != 0 || t.top) {
      return Status::InvalidArgument(what + "classes and top are for outputs");
    }
    if (spec.dtype == DataType::kBytes) {
      if (t.per_feature || t.reference_first_window) {
        return Status::InvalidArgument(
            what + "BYTES inputs get element counts and a length histogram only (no "
                   "per_feature, no drift reference)");
      }
    } else if (t.buckets.empty()) {
      return Status::InvalidArgument(what + "a value histogram needs buckets");
    }
    if (t.per_feature) {
      const int64_t features = FixedElements(spec.dims);
      if (features < 1) {
        return Status::InvalidArgument(what + "per_feature needs fixed dims (no -1), got " +
                                       ShapeToString(spec.dims));
      }
      if (static_cast<uint64_t>(features) * cells_per_feature > Monitor::kMaxCells) {
        return Status::InvalidArgument(
            what + "per_feature with " + std::to_string(features) + " features and " +
            std::to_string(cells_per_feature) + " buckets makes more than " +
            std::to_string(Monitor::kMaxCells) + " counters");
      }
    }
    return Status::Ok();
  }

  if (t.per_feature || t.reference_first_window) {
    return Status::InvalidArgument(what + "per_feature and drift references are for inputs");
  }
  if (t.top) {
    if (!IsFloatType(spec.dtype)) {
      return Status::InvalidArgument(what + "top needs scores (FP16, BF16, FP32 or FP64), got " +
                                     DataTypeName(spec.dtype));
    }
    const int64_t group = spec.dims.empty() ? -1 : spec.dims.back();
    if (group < 1 || group > Monitor::kMaxClasses) {
      return Status::InvalidArgument(what + "top needs a fixed last dimension (the classes) " +
                                     "from 1 to " + std::to_string(Monitor::kMaxClasses) +
                                     ", got dims " + ShapeToString(spec.dims));
    }
    if (t.classes != 0 && t.classes != group) {
      return Status::InvalidArgument(what + "classes " + std::to_string(t.classes) +
                                     " differs from the last dimension " +
                                     std::to_string(group));
    }
    return Status::Ok();
  }
  if (t.classes > 0) {
    if (!IsIntegerType(spec.dtype)) {
      return Status::InvalidArgument(what + "classes counts integer outputs, got " +
                                     std::string(DataTypeName(spec.dtype)) +
                                     " (for scores, use top)");
    }
    return Status::Ok();
  }
  if (t.buckets.empty()) {
    return Status::InvalidArgument(what + "needs classes, buckets or top");
  }
  return Status::Ok();
}

}  // namespace

void MonitorCounts::Add(const MonitorCounts& other) {
  values.Add(other.values);
  for (size_t k = 0; k < classes.size() && k < other.classes.size(); ++k) {
    classes[k] += other.classes[k];
  }
}

Status Monitor::Check(const MonitorOptions& options, const ModelSpec& model) {
  const std::string prefix = "model '" + model.name + "': monitoring: ";
  if (options.sample_every < 1) {
    return Status::InvalidArgument(prefix + "sample_every must be >= 1");
  }
  if (options.intervals < 1 || options.intervals > kMaxIntervals) {
    return Status::InvalidArgument(prefix + "intervals must be from 1 to " +
                                   std::to_string(kMaxIntervals));
  }
  if (options.window_ns < options.intervals) {
    return Status::InvalidArgument(prefix + "the window must be at least 1 ns per interval");
  }
  for (size_t i = 0; i < options.tensors.size(); ++i) {
    const MonitorTensorOptions& t = options.tensors[i];
    for (size_t j = 0; j < i; ++j) {
      if (options.tensors[j].input == t.input && options.tensors[j].name == t.name) {
        return Status::InvalidArgument(prefix + (t.input ? "input '" : "output '") + t.name +
                                       "' is monitored twice");
      }
    }
    Status status = CheckTensor(t, model, prefix);
    if (!status.ok()) return status;
  }
  return Status::Ok();
}

Status Monitor::Create(const MonitorOptions& options, const ModelSpec& model, const Clock* clock,
                       std::unique_ptr<Monitor>* monitor) {
  monitor->reset();
  if (options.tensors.empty()) return Status::Ok();
  Status status = Check(options, model);
  if (!status.ok()) return status;
  monitor->reset(new Monitor(options, model, clock));
  return Status::Ok();
}

Monitor::Monitor(const MonitorOptions& options, const ModelSpec& model, const Clock* clock)
    : options_(options), clock_(clock), interval_ns_(options.window_ns / options.intervals) {
  for (const MonitorTensorOptions& t : options_.tensors) {
    Tensor tensor(t.buckets);
    tensor.options = t;
    tensor.index = static_cast<size_t>(FindTensor(model, t.input, t.name));
    const TensorSpec& spec = Specs(model, t.input)[tensor.index];
    tensor.dtype = spec.dtype;
    if (t.per_feature) tensor.features = static_cast<size_t>(FixedElements(spec.dims));
    if (t.top) {
      tensor.class_count = static_cast<size_t>(spec.dims.back());
    } else if (!t.input) {
      tensor.class_count = static_cast<size_t>(t.classes);
    }
    tensors_.push_back(std::move(tensor));
  }
  for (size_t t = 0; t < tensors_.size(); ++t) {
    totals_.push_back(Empty(t));
    first_window_.push_back(Empty(t));
    file_reference_.push_back(Empty(t));
  }
  has_file_reference_.assign(tensors_.size(), false);
  ring_.resize(static_cast<size_t>(options_.intervals));
  for (Interval& slot : ring_) {
    for (size_t t = 0; t < tensors_.size(); ++t) slot.tensors.push_back(Empty(t));
  }
}

MonitorCounts Monitor::Empty(size_t t) const {
  const Tensor& tensor = tensors_[t];
  MonitorCounts counts;
  counts.values.Reset(tensor.features, tensor.histogram.buckets());
  counts.classes.assign(tensor.class_count > 0 ? tensor.class_count + 1 : 0, 0);
  return counts;
}

void Monitor::Start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    started_ns_ = clock_->NowNs();
    sampled_ = 0;
    seen_.store(0, std::memory_order_relaxed);
    failed_.store(0, std::memory_order_relaxed);
    for (size_t t = 0; t < tensors_.size(); ++t) {
      totals_[t] = Empty(t);
      first_window_[t] = Empty(t);
    }
    for (Interval& slot : ring_) slot.number = -1;  // cleared when next used
  }
  running_.store(true, std::memory_order_release);
}

void Monitor::Measure(size_t t, const BatchInputs& inputs, const BatchOutputs& outputs,
                      MonitorCounts* out) const {
  const Tensor& tensor = tensors_[t];
  out->values.Reset(tensor.features, tensor.histogram.buckets());
  out->classes.assign(tensor.class_count > 0 ? tensor.class_count + 1 : 0, 0);
  const BatchTensor& batch = tensor.options.input ? inputs[tensor.index] : outputs[tensor.index];
  if (batch.buffer == nullptr) return;
  const uint8_t* data = batch.buffer->data();
  const size_t size = batch.buffer->size();

  if (tensor.dtype == DataType::kBytes) {
    int64_t elements = 0;
    if (!ElementCount(batch.shape, 0, &elements)) return;
    tensor.histogram.AccumulateLengths(data, size, static_cast<size_t>(elements), &out->values);
    return;
  }
  const size_t elements = size / ElementSize(tensor.dtype);
  if (tensor.options.top) {
    CountTopClasses(tensor.dtype, data, elements, tensor.class_count, out->classes.data(),
                    tensor.histogram, &out->values);
    return;
  }
  if (tensor.class_count > 0) {
    CountClasses(tensor.dtype, data, elements, tensor.class_count, out->classes.data());
  }
  // Inputs always have a histogram; an output with classes only has none to fill.
  if (tensor.options.input || !tensor.options.buckets.empty()) {
    if (elements % tensor.features != 0) return;  // per_feature: dims are fixed, so never
    tensor.histogram.Accumulate(tensor.dtype, data, elements, tensor.features, &out->values);
  }
}

int64_t Monitor::IntervalLocked(int64_t now_ns) const {
  return now_ns <= started_ns_ ? 0 : (now_ns - started_ns_) / interval_ns_;
}

Monitor::Interval& Monitor::SlotLocked(int64_t now_ns) {
  const int64_t number = IntervalLocked(now_ns);
  Interval& slot = ring_[static_cast<size_t>(number % options_.intervals)];
  if (slot.number != number) {
    // The slot last held an interval a whole window ago (or none): it ages out here.
    for (size_t t = 0; t < tensors_.size(); ++t) {
      MonitorCounts& counts = slot.tensors[t];
      counts.values.Reset(counts.values.features, counts.values.buckets);
      std::fill(counts.classes.begin(), counts.classes.end(), 0);
    }
    slot.number = number;
  }
  return slot;
}

void Monitor::Record(const BatchInputs& inputs, const BatchOutputs& outputs) {
  if (!running_.load(std::memory_order_acquire)) return;
  const uint64_t seen = seen_.fetch_add(1, std::memory_order_relaxed);
  if (seen % static_cast<uint64_t>(options_.sample_every) != 0) return;
  try {
    // Measured outside the lock, into this worker's scratch (kept between batches).
    thread_local std::vector<MonitorCounts> batch;
    batch.resize(tensors_.size());
    for (size_t t = 0; t < tensors_.size(); ++t) Measure(t, inputs, outputs, &batch[t]);

    std::lock_guard<std::mutex> lock(mu_);
    // The clock is read under the lock, so intervals are entered in time order and a slot is
    // never cleared by a batch older than the interval it holds.
    const int64_t now_ns = clock_->NowNs();
    Interval& slot = SlotLocked(now_ns);
    const bool first_window = now_ns - started_ns_ < options_.window_ns;
    for (size_t t = 0; t < tensors_.size(); ++t) {
      totals_[t].Add(batch[t]);
      slot.tensors[t].Add(batch[t]);
      if (first_window && tensors_[t].options.reference_first_window) {
        first_window_[t].Add(batch[t]);
      }
    }
    ++sampled_;
  } catch (...) {  // std::bad_alloc growing scratch: this batch is not counted, that is all
    failed_.fetch_add(1, std::memory_order_relaxed);
  }
}

Status Monitor::SetReference(size_t t, DataType dtype, const uint8_t* data, size_t bytes) {
  if (t >= tensors_.size() || !tensors_[t].options.input) {
    return Status::InvalidArgument("a drift reference is for a monitored input");
  }
  const Tensor& tensor = tensors_[t];
  const std::string what = "input '" + tensor.options.name + "': reference: ";
  if (tensor.dtype == DataType::kBytes || dtype == DataType::kBytes ||
      !IsValidDataType(static_cast<int>(dtype))) {
    return Status::InvalidArgument(what + "needs numeric values");
  }
  const size_t size = ElementSize(dtype);
  if (bytes % size != 0 || (bytes / size) % tensor.features != 0) {
    return Status::InvalidArgument(what + std::to_string(bytes) + " bytes of " +
                                   DataTypeName(dtype) + " do not make whole rows of " +
                                   std::to_string(tensor.features) + " features");
  }
  MonitorCounts reference = Empty(t);
  tensor.histogram.Accumulate(dtype, data, bytes / size, tensor.features, &reference.values);
  if (reference.values.Finite() == 0) {
    return Status::InvalidArgument(what + "the sample holds no finite value");
  }
  std::lock_guard<std::mutex> lock(mu_);
  file_reference_[t] = std::move(reference);
  has_file_reference_[t] = true;
  return Status::Ok();
}

MonitorSnapshot Monitor::Snapshot() const {
  MonitorSnapshot snapshot;
  snapshot.window_ns = options_.window_ns;
  snapshot.interval_ns = interval_ns_;
  snapshot.sample_every = options_.sample_every;
  snapshot.tensors.resize(tensors_.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot.running = running_.load(std::memory_order_acquire);
    snapshot.now_ns = clock_->NowNs();
    snapshot.started_ns = started_ns_;
    snapshot.batches_seen = seen_.load(std::memory_order_relaxed);
    snapshot.batches_sampled = sampled_;
    snapshot.batches_failed = failed_.load(std::memory_order_relaxed);
    const int64_t current = IntervalLocked(snapshot.now_ns);
    const bool first_window_done =
        snapshot.running && snapshot.now_ns - started_ns_ >= options_.window_ns;
    for (size_t t = 0; t < tensors_.size(); ++t) {
      MonitorTensorSnapshot& out = snapshot.tensors[t];
      out.total = totals_[t];
      out.window = Empty(t);
      for (const Interval& slot : ring_) {
        if (slot.number >= 0 && slot.number <= current &&
            slot.number > current - options_.intervals) {
          out.window.Add(slot.tensors[t]);
        }
      }
      if (has_file_reference_[t]) {
        out.reference = file_reference_[t];
        out.has_reference = true;
        out.reference_source = "file";
      } else if (tensors_[t].options.reference_first_window && first_window_done) {
        out.reference = first_window_[t];
        out.has_reference = true;
        out.reference_source = "first_window";
      }
    }
  }
  // Outside the lock: the comparisons.
  for (size_t t = 0; t < tensors_.size(); ++t) {
    const Tensor& tensor = tensors_[t];
    MonitorTensorSnapshot& out = snapshot.tensors[t];
    out.options = tensor.options;
    out.dtype = tensor.dtype;
    out.features = tensor.features;
    out.class_count = static_cast<int64_t>(tensor.class_count);
    out.psi_pooled = std::nan("");
    if (!out.has_reference) continue;
    const size_t buckets = tensor.histogram.buckets();
    out.psi.resize(tensor.features);
    for (size_t f = 0; f < tensor.features; ++f) {
      out.psi[f] = PopulationStabilityIndex(out.window.values.counts.data() + f * buckets,
                                            out.reference.values.counts.data() + f * buckets,
                                            buckets);
    }
    std::vector<uint64_t> window, reference;
    out.window.values.Pool(&window);
    out.reference.values.Pool(&reference);
    out.psi_pooled = PopulationStabilityIndex(window.data(), reference.data(), buckets);
  }
  return snapshot;
}

}  // namespace core
}  // namespace pyserver
