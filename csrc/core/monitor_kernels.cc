#include "core/monitor_kernels.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "core/framing.h"

// GCC's -O2 vectorizes only loops whose trip count is a known multiple of the vector width; the
// lane loops below run over the features (or the tail of a pooled tensor), a count known at run
// time. This turns GCC's loop vectorizer on for this file with its usual cost model. Clang
// vectorizes such loops at -O2 already. Placed after the includes so that it applies to this
// file's functions only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic")
#endif

namespace pyserver {
namespace core {
namespace {

// Values read through a conversion (FP16, BF16, integers, unaligned data) are converted this
// many at a time into thread-local scratch, then histogrammed like FP32.
constexpr size_t kBlock = 4096;
// Lane counters are 32-bit: they are folded into the 64-bit counts before they could overflow.
constexpr uint64_t kFlushRows = uint64_t{1} << 30;

float BitsToFloat(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

uint32_t FloatToBits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Per-lane (per-position) counts of one batch: le[b * lanes + f] = values at lane f that are
// <= bound b (-Inf included, NaN and +Inf never), plus NaN, +Inf, -Inf, values and finite sums
// per lane. The per-bucket counts are differences of the `le` counts (Fold).
template <typename V>
struct LaneCounts {
  size_t lanes = 0;
  size_t bounds = 0;
  uint64_t rows = 0;  // rows added since Begin
  std::vector<uint32_t> le, nan, pos, neg, n;
  std::vector<double> sum;

  void Begin(size_t lane_count, size_t bound_count) {
    lanes = lane_count;
    bounds = bound_count;
    rows = 0;
    le.assign(bounds * lanes, 0);
    nan.assign(lanes, 0);
    pos.assign(lanes, 0);
    neg.assign(lanes, 0);
    n.assign(lanes, 0);
    sum.assign(lanes, 0.0);
  }
};

// Each worker thread keeps its scratch between batches: no allocation once it has grown.
template <typename V>
LaneCounts<V>& Scratch() {
  thread_local LaneCounts<V> scratch;
  return scratch;
}

template <typename V>
std::vector<V>& Buffer() {
  thread_local std::vector<V> buffer;
  return buffer;
}

// The hot loop: `rows` rows of `width` values (width <= lanes), value f of each row into lane f.
// Per bound, one branch-free pass over the row; then one pass for NaN, infinities and sums.
// Every statement is lane-independent, so each inner loop is a plain vector loop (compare,
// mask, add) with no reduction across lanes.
template <typename V>
void AddRows(LaneCounts<V>& s, const V* x, size_t rows, size_t width, const V* bounds) {
  constexpr V kMax = std::numeric_limits<V>::max();
  const size_t lanes = s.lanes;
  uint32_t* __restrict__ nan = s.nan.data();
  uint32_t* __restrict__ pos = s.pos.data();
  uint32_t* __restrict__ neg = s.neg.data();
  double* __restrict__ sum = s.sum.data();
  for (size_t r = 0; r < rows; ++r) {
    const V* __restrict__ row = x + r * width;
    for (size_t b = 0; b < s.bounds; ++b) {
      const V bound = bounds[b];
      uint32_t* __restrict__ le = s.le.data() + b * lanes;
      for (size_t f = 0; f < width; ++f) le[f] += row[f] <= bound ? 1u : 0u;
    }
    // One loop per count: each is a single compare-and-add the vectorizer takes whole.
    for (size_t f = 0; f < width; ++f) nan[f] += static_cast<uint32_t>(row[f] != row[f]);
    for (size_t f = 0; f < width; ++f) pos[f] += static_cast<uint32_t>(row[f] > kMax);
    for (size_t f = 0; f < width; ++f) neg[f] += static_cast<uint32_t>(row[f] < -kMax);
    // Finite values only: NaN and both infinities fail one of the two comparisons.
    for (size_t f = 0; f < width; ++f) {
      const V v = row[f];
      sum[f] += static_cast<double>((v >= -kMax) & (v <= kMax) ? v : V{0});
    }
  }
  uint32_t* __restrict__ count = s.n.data();
  for (size_t f = 0; f < width; ++f) count[f] += static_cast<uint32_t>(rows);
  s.rows += rows;
}

// Adds the lanes' counts to `out`: lane f to feature f, or every lane to feature 0 (pooled).
template <typename V>
void Fold(const LaneCounts<V>& s, bool pooled, ValueCounts* out) {
  const size_t buckets = s.bounds + 1;
  for (size_t f = 0; f < s.lanes; ++f) {
    const uint64_t n = s.n[f];
    if (n == 0) continue;
    const size_t target = pooled ? 0 : f;
    uint64_t* counts = out->counts.data() + target * buckets;
    const uint64_t neg = s.neg[f];
    const uint64_t finite = n - s.nan[f] - s.pos[f] - neg;
    uint64_t below = 0;  // finite values <= the previous bound
    for (size_t b = 0; b < s.bounds; ++b) {
      const uint64_t le = s.le[b * s.lanes + f] - neg;  // -Inf is <= every bound: take it out
      counts[b] += le - below;
      below = le;
    }
    counts[s.bounds] += finite - below;
    out->sums[target] += s.sum[f];
    out->nan += s.nan[f];
    out->inf += s.pos[f] + neg;
    out->elements += n;
  }
}

// Histograms `elements` values, which `get(start, count)` returns as a pointer to `count`
// values of V (straight from the buffer, or converted into scratch). `block` is how many `get`
// may be asked for at once (a multiple of the row width).
template <typename V, typename Get>
void Histogram(Get get, size_t elements, size_t features, const V* bounds, size_t bound_count,
               size_t block, ValueCounts* out) {
  const bool pooled = features == 1;
  const size_t width = pooled ? ValueHistogrammer::kPoolLanes : features;
  LaneCounts<V>& s = Scratch<V>();
  s.Begin(width, bound_count);
  auto add = [&](const V* x, size_t rows, size_t row_width) {
    if (s.rows + rows > kFlushRows) {
      Fold(s, pooled, out);
      s.Begin(width, bound_count);
    }
    AddRows(s, x, rows, row_width, bounds);
  };
  for (size_t start = 0; start < elements; start += block) {
    const size_t count = std::min(block, elements - start);
    const V* x = get(start, count);
    const size_t rows = count / width;
    for (size_t r = 0; r < rows; r += kFlushRows) {
      add(x + r * width, std::min<size_t>(rows - r, kFlushRows), width);
    }
    if (count % width != 0) add(x + rows * width, 1, count % width);  // pooled: the tail
  }
  Fold(s, pooled, out);
}

// n values of T at src (any alignment) into dst as V.
template <typename T, typename V>
void Convert(const uint8_t* src, size_t n, V* dst) {
  for (size_t i = 0; i < n; ++i) {
    T value;
    std::memcpy(&value, src + i * sizeof(T), sizeof(T));
    dst[i] = static_cast<V>(value);
  }
}

// n values of `dtype` at src into dst as V. False for BYTES and unknown types.
template <typename V>
bool Load(DataType dtype, const uint8_t* src, size_t n, V* dst) {
  switch (dtype) {
    case DataType::kBool:
    case DataType::kUint8: Convert<uint8_t>(src, n, dst); return true;
    case DataType::kInt8: Convert<int8_t>(src, n, dst); return true;
    case DataType::kUint16: Convert<uint16_t>(src, n, dst); return true;
    case DataType::kInt16: Convert<int16_t>(src, n, dst); return true;
    case DataType::kUint32: Convert<uint32_t>(src, n, dst); return true;
    case DataType::kInt32: Convert<int32_t>(src, n, dst); return true;
    case DataType::kUint64: Convert<uint64_t>(src, n, dst); return true;
    case DataType::kInt64: Convert<int64_t>(src, n, dst); return true;
    case DataType::kFp32: Convert<float>(src, n, dst); return true;
    case DataType::kFp64: Convert<double>(src, n, dst); return true;
    case DataType::kFp16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = static_cast<V>(HalfToFloat(bits));
      }
      return true;
    case DataType::kBf16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t bits;
        std::memcpy(&bits, src + 2 * i, 2);
        dst[i] = static_cast<V>(Bfloat16ToFloat(bits));
      }
      return true;
    case DataType::kBytes:
    case DataType::kInvalid:
      break;
  }
  return false;
}

// The histogram of values of `dtype` compared as V. FP32 (as float) and FP64 (as double) are
// read in place when aligned; every other type goes through a conversion block.
template <typename V>
void HistogramOf(DataType dtype, const uint8_t* data, size_t elements, size_t features,
                 const V* bounds, size_t bound_count, ValueCounts* out) {
  constexpr DataType kNative = std::is_same<V, float>::value ? DataType::kFp32 : DataType::kFp64;
  const bool native = dtype == kNative;
  if (native && reinterpret_cast<uintptr_t>(data) % alignof(V) == 0) {
    const V* values = reinterpret_cast<const V*>(data);
    Histogram<V>([values](size_t start, size_t) { return values + start; }, elements, features,
                 bounds, bound_count, std::max<size_t>(elements, 1), out);
    return;
  }
  const size_t width = features == 1 ? ValueHistogrammer::kPoolLanes : features;
  const size_t block = width * std::max<size_t>(1, kBlock / width);
  std::vector<V>& buffer = Buffer<V>();
  buffer.resize(block);
  const size_t size = ElementSize(dtype);
  Histogram<V>(
      [&](size_t start, size_t count) {
        Load<V>(dtype, data + start * size, count, buffer.data());
        return static_cast<const V*>(buffer.data());
      },
      elements, features, bounds, bound_count, block, out);
}

// For each row of `group` values: the class of its largest (first of equal maxima, NaN
// skipped) into counts, its score appended to `maxima`, histogrammed when kBlock are waiting.
template <typename V>
void TopOf(DataType dtype, const uint8_t* data, size_t elements, size_t group, uint64_t* counts,
           const ValueHistogrammer& histogram, ValueCounts* top) {
  thread_local std::vector<V> row;
  thread_local std::vector<V> maxima;
  row.resize(group);
  maxima.clear();
  auto flush = [&] {
    if constexpr (std::is_same<V, float>::value) {
      histogram.AccumulateFloats(maxima.data(), maxima.size(), top);
    } else {
      histogram.AccumulateDoubles(maxima.data(), maxima.size(), top);
    }
    maxima.clear();
  };
  const size_t size = ElementSize(dtype);
  const size_t rows = elements / group;
  for (size_t r = 0; r < rows; ++r) {
    Load<V>(dtype, data + r * group * size, group, row.data());
    size_t best = group;  // none yet
    for (size_t k = 0; k < group; ++k) {
      const V v = row[k];
      if (v == v && (best == group || v > row[best])) best = k;
    }
    ++counts[best];
    maxima.push_back(best == group ? std::numeric_limits<V>::quiet_NaN() : row[best]);
    if (maxima.size() == kBlock) flush();
  }
  if (!maxima.empty()) flush();
}

template <typename T>
void Classes(const uint8_t* data, size_t elements, size_t classes, uint64_t* counts) {
  for (size_t i = 0; i < elements; ++i) {
    T value;
    std::memcpy(&value, data + i * sizeof(T), sizeof(T));
    // Negative values (signed types) and values >= classes fall outside.
    bool inside = static_cast<uint64_t>(value) < classes;
    if constexpr (std::is_signed<T>::value) inside = inside && value >= 0;
    ++counts[inside ? static_cast<size_t>(value) : classes];
  }
}

}  // namespace

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000u) << 16;
  const uint32_t magnitude = bits & 0x7fffu;
  // Exponent and mantissa moved to float's positions read as 2^-112 times the half's value
  // (subnormal halves land on float subnormals of the same digits); the multiply rescales
  // both exactly. Infinity and NaN (exponent all ones) keep all ones and their mantissa.
  uint32_t out = FloatToBits(BitsToFloat(magnitude << 13) * 0x1p112f);
  if (magnitude >= 0x7c00u) out = 0x7f800000u | (magnitude << 13);
  return BitsToFloat(out | sign);
}

float Bfloat16ToFloat(uint16_t bits) { return BitsToFloat(static_cast<uint32_t>(bits) << 16); }

bool ComparesAsFloat(DataType dtype) {
  switch (dtype) {
    case DataType::kBool:
    case DataType::kUint8:
    case DataType::kInt8:
    case DataType::kUint16:
    case DataType::kInt16:
    case DataType::kFp16:
    case DataType::kBf16:
    case DataType::kFp32:
      return true;
    default:
      return false;
  }
}

bool IsIntegerType(DataType dtype) {
  switch (dtype) {
    case DataType::kBool:
    case DataType::kUint8:
    case DataType::kUint16:
    case DataType::kUint32:
    case DataType::kUint64:
    case DataType::kInt8:
    case DataType::kInt16:
    case DataType::kInt32:
    case DataType::kInt64:
      return true;
    default:
      return false;
  }
}

bool IsFloatType(DataType dtype) {
  return dtype == DataType::kFp16 || dtype == DataType::kBf16 || dtype == DataType::kFp32 ||
         dtype == DataType::kFp64;
}

void ValueCounts::Reset(size_t feature_count, size_t bucket_count) {
  features = feature_count;
  buckets = bucket_count;
  counts.assign(features * buckets, 0);
  sums.assign(features, 0.0);
  nan = inf = elements = 0;
}

void ValueCounts::Add(const ValueCounts& other) {
  for (size_t i = 0; i < counts.size() && i < other.counts.size(); ++i) {
    counts[i] += other.counts[i];
  }
  for (size_t f = 0; f < sums.size() && f < other.sums.size(); ++f) sums[f] += other.sums[f];
  nan += other.nan;
  inf += other.inf;
  elements += other.elements;
}

uint64_t ValueCounts::Finite() const {
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  return total;
}

void ValueCounts::Pool(std::vector<uint64_t>* pooled) const {
  pooled->assign(buckets, 0);
  for (size_t f = 0; f < features; ++f) {
    for (size_t k = 0; k < buckets; ++k) (*pooled)[k] += counts[f * buckets + k];
  }
}

ValueHistogrammer::ValueHistogrammer(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  float_bounds_.reserve(bounds_.size());
  for (double bound : bounds_) float_bounds_.push_back(static_cast<float>(bound));
}

bool ValueHistogrammer::Accumulate(DataType dtype, const uint8_t* data, size_t elements,
                                   size_t features, ValueCounts* out) const {
  if (dtype == DataType::kBytes || dtype == DataType::kInvalid || features == 0) return false;
  if (ComparesAsFloat(dtype)) {
    HistogramOf<float>(dtype, data, elements, features, float_bounds_.data(),
                       float_bounds_.size(), out);
  } else {
    HistogramOf<double>(dtype, data, elements, features, bounds_.data(), bounds_.size(), out);
  }
  return true;
}

void ValueHistogrammer::AccumulateFloats(const float* values, size_t n, ValueCounts* out) const {
  HistogramOf<float>(DataType::kFp32, reinterpret_cast<const uint8_t*>(values), n, 1,
                     float_bounds_.data(), float_bounds_.size(), out);
}

void ValueHistogrammer::AccumulateDoubles(const double* values, size_t n,
                                          ValueCounts* out) const {
  HistogramOf<double>(DataType::kFp64, reinterpret_cast<const uint8_t*>(values), n, 1,
                      bounds_.data(), bounds_.size(), out);
}

bool ValueHistogrammer::AccumulateLengths(const uint8_t* data, size_t size, size_t elements,
                                          ValueCounts* out) const {
  size_t offset = 0;
  for (size_t i = 0; i < elements; ++i) {
    if (size - offset < kFramingHeaderBytes) return false;
    const uint32_t length = ReadFramedLength(data + offset);
    offset += kFramingHeaderBytes;
    if (length > size - offset) return false;
    offset += length;
    const size_t bucket = static_cast<size_t>(
        std::lower_bound(bounds_.begin(), bounds_.end(), static_cast<double>(length)) -
        bounds_.begin());
    ++out->counts[bucket];
    out->sums[0] += length;
    ++out->elements;
  }
  return true;
}

void CountClasses(DataType dtype, const uint8_t* data, size_t elements, size_t classes,
                  uint64_t* counts) {
  switch (dtype) {
    case DataType::kBool:
    case DataType::kUint8: Classes<uint8_t>(data, elements, classes, counts); break;
    case DataType::kInt8: Classes<int8_t>(data, elements, classes, counts); break;
    case DataType::kUint16: Classes<uint16_t>(data, elements, classes, counts); break;
    case DataType::kInt16: Classes<int16_t>(data, elements, classes, counts); break;
    case DataType::kUint32: Classes<uint32_t>(data, elements, classes, counts); break;
    case DataType::kInt32: Classes<int32_t>(data, elements, classes, counts); break;
    case DataType::kUint64: Classes<uint64_t>(data, elements, classes, counts); break;
    case DataType::kInt64: Classes<int64_t>(data, elements, classes, counts); break;
    default: break;  // not an integer type: the monitor's options never ask for it
  }
}

void CountTopClasses(DataType dtype, const uint8_t* data, size_t elements, size_t group,
                     uint64_t* counts, const ValueHistogrammer& histogram, ValueCounts* top) {
  top->Reset(1, histogram.buckets());
  if (group == 0 || !IsFloatType(dtype)) return;
  if (ComparesAsFloat(dtype)) {
    TopOf<float>(dtype, data, elements, group, counts, histogram, top);
  } else {
    TopOf<double>(dtype, data, elements, group, counts, histogram, top);
  }
}

double PopulationStabilityIndex(const uint64_t* current, const uint64_t* reference,
                                size_t buckets) {
  double current_total = 0, reference_total = 0;
  for (size_t k = 0; k < buckets; ++k) {
    current_total += static_cast<double>(current[k]);
    reference_total += static_cast<double>(reference[k]);
  }
  if (current_total == 0 || reference_total == 0) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  double psi = 0;
  for (size_t k = 0; k < buckets; ++k) {
    const double p = std::max(static_cast<double>(current[k]) / current_total, kPsiFloor);
    const double q = std::max(static_cast<double>(reference[k]) / reference_total, kPsiFloor);
    psi += (p - q) * std::log(p / q);
  }
  return psi;
}

}  // namespace core
}  // namespace pyserver
