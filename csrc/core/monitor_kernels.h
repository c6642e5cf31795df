// The monitor's arithmetic on one tensor of one batch: value histograms, NaN and infinity counts,
// class counts and the top class of each row, straight from the batch's buffers.
//
// Every function here reads a buffer the batch already holds (the gathered input, the output the
// scatter hands out: pinned host memory on a GPU instance) and writes small per-tensor counts; it
// copies nothing else, allocates only thread-local scratch that is kept between batches, and never
// touches Python. The histogram loop is written so that the compiler vectorizes it: for each
// bucket bound, a pass over a row adds (x <= bound) into one counter per position (lane), with no
// data-dependent branch and no scatter; the per-bucket counts are differences of those cumulative
// counts, worked out once per batch (monitor_kernels.cc says more).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/types.h"

namespace pyserver {
namespace core {

// Counts of one tensor over some span (a batch, an interval, since start, a reference sample).
// `features` histograms of `buckets` counts each, feature-major: counts[f * buckets + k]. With
// bounds b_0 < ... < b_{n-1} (buckets = n + 1), bucket k holds the finite values x with
// b_{k-1} < x <= b_k (Prometheus' `le`), bucket 0 those x <= b_0 and the last those above b_{n-1}.
// NaN and +-Inf are counted apart and in no bucket (nor in the sums).
struct ValueCounts {
  size_t features = 0;
  size_t buckets = 0;
  std::vector<uint64_t> counts;  // features * buckets
  std::vector<double> sums;      // per feature: the sum of its finite values
  uint64_t nan = 0;
  uint64_t inf = 0;
  uint64_t elements = 0;  // every value seen, NaN and +-Inf included

  // Zeroes the counts for `features` x `buckets` (keeps the memory).
  void Reset(size_t features, size_t buckets);
  // Adds `other`, which has the same features and buckets.
  void Add(const ValueCounts& other);
  // Finite values counted (the sum of all counts).
  uint64_t Finite() const;
  // Every feature's histogram summed into one: pooled gets `buckets` counts.
  void Pool(std::vector<uint64_t>* pooled) const;
};

// Value histograms over fixed bucket bounds. Immutable after construction: instances are shared
// by the worker threads of one model.
class ValueHistogrammer {
 public:
  // Lanes of the pooled histogram: values are read as rows of this many, each position its
  // own counter (so the loop vectorizes), then the lanes are summed.
  static constexpr size_t kPoolLanes = 64;

  // bounds: finite, strictly increasing (the caller checked).
  explicit ValueHistogrammer(std::vector<double> bounds);

  const std::vector<double>& bounds() const { return bounds_; }
  size_t buckets() const { return bounds_.size() + 1; }

  // Adds `elements` values of `dtype` (any numeric type; BOOL counts as 0 and 1) read from
  // `data` to `out`: with features == 1 into one histogram of every value, else into
  // `features` histograms, value i going to feature i % features (elements must then be a
  // multiple of features). `out` must have been Reset to (features, buckets()). False, with
  // nothing added, for BYTES or an unknown type.
  bool Accumulate(DataType dtype, const uint8_t* data, size_t elements, size_t features,
                  ValueCounts* out) const;

  // BYTES: the length of each of `elements` framed elements in data[0, size) into `out` (one
  // feature). False when the framing runs past the end (what was read before stays counted).
  bool AccumulateLengths(const uint8_t* data, size_t size, size_t elements,
                         ValueCounts* out) const;

  // The same histogram of values already in float or double (the top class's score).
  void AccumulateFloats(const float* values, size_t n, ValueCounts* out) const;
  void AccumulateDoubles(const double* values, size_t n, ValueCounts* out) const;

 private:
  std::vector<double> bounds_;
  std::vector<float> float_bounds_;  // the bounds as float: what float-typed values compare with
};

// True for the types whose values are compared as float (exact for every value of theirs), false
// for those compared as double (32- and 64-bit integers, FP64).
bool ComparesAsFloat(DataType dtype);
bool IsIntegerType(DataType dtype);  // BOOL, UINT*, INT*
bool IsFloatType(DataType dtype);    // FP16, BF16, FP32, FP64

// Integer outputs: counts[v] += 1 for each of `elements` values v in [0, classes), and
// counts[classes] += 1 for every other value. counts has classes + 1 entries.
void CountClasses(DataType dtype, const uint8_t* data, size_t elements, size_t classes,
                  uint64_t* counts);

// Float outputs (scores): the values are rows of `group` scores (the last dimension). For each
// row, counts[argmax] += 1 (the first of equal maxima; NaN scores are skipped, and a row of
// NaN counts in counts[group]) and its largest score goes into `top` (one feature) through
// `histogram`. counts has group + 1 entries; `top` is Reset to (1, histogram.buckets()).
void CountTopClasses(DataType dtype, const uint8_t* data, size_t elements, size_t group,
                     uint64_t* counts, const ValueHistogrammer& histogram, ValueCounts* top);

// FP16 and BF16 to float, exactly (NaN stays NaN, subnormals keep their value).
float HalfToFloat(uint16_t bits);
float Bfloat16ToFloat(uint16_t bits);

// Population stability index of the histogram `current` against `reference` (`buckets` counts
// each): sum over buckets of (p - q) * ln(p / q), p and q each bucket's share of its histogram,
// a share below kPsiFloor taken as kPsiFloor (an empty bucket would make it infinite). NaN when
// either histogram is empty.
constexpr double kPsiFloor = 1e-4;
double PopulationStabilityIndex(const uint64_t* current, const uint64_t* reference,
                                size_t buckets);

}  // namespace core
}  // namespace pyserver
