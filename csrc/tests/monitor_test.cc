// The monitor's arithmetic (csrc/core/monitor_kernels.h, monitor.h): exact histograms, NaN and
// infinity counts, class counts, every datatype, the window's ring on a manual clock, drift.
// Run through tests/unit/test_monitor_cpp.py.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "core/clock.h"
#include "core/framing.h"
#include "core/monitor.h"
#include "core/monitor_kernels.h"
#include "tests/check.h"

namespace pyserver {
namespace core {
namespace {

using Counts = std::vector<uint64_t>;
constexpr float kNan = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kSecond = 1000LL * 1000 * 1000;

template <typename T>
std::shared_ptr<AlignedBuffer> BufferOf(const std::vector<T>& values) {
  std::shared_ptr<AlignedBuffer> buffer = AlignedBuffer::Create(values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(buffer->mutable_data(), values.data(), values.size() * sizeof(T));
  return buffer;
}

template <typename T>
ValueCounts Histogram(const ValueHistogrammer& h, DataType dtype, const std::vector<T>& values,
                      size_t features = 1) {
  ValueCounts out;
  out.Reset(features, h.buckets());
  CHECK(h.Accumulate(dtype, reinterpret_cast<const uint8_t*>(values.data()), values.size(),
                     features, &out));
  return out;
}

// Counts of feature f.
Counts Feature(const ValueCounts& v, size_t f) {
  return Counts(v.counts.begin() + f * v.buckets, v.counts.begin() + (f + 1) * v.buckets);
}

TEST_CASE(PooledHistogramCountsEachFiniteValueOnce) {
  ValueHistogrammer h({0.0, 1.0, 2.5});
  // A value equal to a bound is in that bound's bucket (Prometheus' le); NaN and both
  // infinities are counted apart and in no bucket, nor in the sum.
  const std::vector<float> values = {-3, 0, 0.5, 1, 1.0001f, 2.5, 7, kNan, kInf, -kInf, -0.0f};
  const ValueCounts v = Histogram(h, DataType::kFp32, values);
  CHECK_EQ(Feature(v, 0), (Counts{3, 2, 2, 1}));
  CHECK_EQ(v.nan, uint64_t{1});
  CHECK_EQ(v.inf, uint64_t{2});
  CHECK_EQ(v.elements, uint64_t{11});
  CHECK_EQ(v.Finite(), uint64_t{8});
  CHECK(std::fabs(v.sums[0] - (-3 + 0 + 0.5 + 1 + 1.0001 + 2.5 + 7)) < 1e-5);
}

TEST_CASE(PooledHistogramOfManyValuesWithATail) {
  // 1000 values (15 rows of 64 lanes and a tail of 40): value i % 10.
  ValueHistogrammer h({2, 5});
  std::vector<float> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 10);
  const ValueCounts v = Histogram(h, DataType::kFp32, values);
  CHECK_EQ(Feature(v, 0), (Counts{300, 300, 400}));  // {0,1,2}, {3,4,5}, {6..9}
  CHECK_EQ(v.sums[0], 4500.0);
}

TEST_CASE(PerFeatureHistograms) {
  ValueHistogrammer h({1, 10});
  // 3 features: rows (0, 5, 20), (1, 10, 11), (2, NaN, -inf)
  const std::vector<float> values = {0, 5, 20, 1, 10, 11, 2, kNan, -kInf};
  const ValueCounts v = Histogram(h, DataType::kFp32, values, 3);
  CHECK_EQ(Feature(v, 0), (Counts{2, 1, 0}));
  CHECK_EQ(Feature(v, 1), (Counts{0, 2, 0}));
  CHECK_EQ(Feature(v, 2), (Counts{0, 0, 2}));
  CHECK_EQ(v.sums[0], 3.0);
  CHECK_EQ(v.sums[1], 15.0);
  CHECK_EQ(v.sums[2], 31.0);
  CHECK_EQ(v.nan, uint64_t{1});
  CHECK_EQ(v.inf, uint64_t{1});
}

TEST_CASE(PerFeatureThroughConversionBlocks) {
  // INT16 goes through conversion blocks of whole rows (3 features: 4095 values a block);
  // 5000 rows cross several. Row r holds (r % 7, -(r % 3), 1000).
  ValueHistogrammer h({0, 3});
  std::vector<int16_t> values;
  for (int r = 0; r < 5000; ++r) {
    values.push_back(static_cast<int16_t>(r % 7));
    values.push_back(static_cast<int16_t>(-(r % 3)));
    values.push_back(1000);
  }
  const ValueCounts v = Histogram(h, DataType::kInt16, values, 3);
  uint64_t zero = 0, to3 = 0, above = 0;
  for (int r = 0; r < 5000; ++r) {
    const int x = r % 7;
    (x <= 0 ? zero : x <= 3 ? to3 : above) += 1;
  }
  CHECK_EQ(Feature(v, 0), (Counts{zero, to3, above}));
  CHECK_EQ(Feature(v, 1), (Counts{5000, 0, 0}));
  CHECK_EQ(Feature(v, 2), (Counts{0, 0, 5000}));
}

template <typename T>
ValueCounts HistogramAs(const ValueHistogrammer& h, DataType dtype,
                        const std::vector<double>& values) {
  std::vector<T> typed;
  for (double x : values) typed.push_back(static_cast<T>(x));
  return Histogram(h, dtype, typed);
}

TEST_CASE(EveryNumericTypeCountsTheSameValuesAlike) {
  ValueHistogrammer h({-1, 0, 2, 50});
  const std::vector<double> signed_values = {-3, -1, 0, 1, 2, 5, 100, 3, -2};
  const std::vector<double> unsigned_values = {0, 1, 2, 5, 100, 3, 50, 51};
  const Counts expected_signed = Feature(HistogramAs<float>(h, DataType::kFp32, signed_values), 0);
  const Counts expected_unsigned =
      Feature(HistogramAs<float>(h, DataType::kFp32, unsigned_values), 0);
  CHECK_EQ(expected_signed, (Counts{3, 1, 2, 2, 1}));
  CHECK_EQ(expected_unsigned, (Counts{0, 1, 2, 3, 2}));
  CHECK_EQ(Feature(HistogramAs<double>(h, DataType::kFp64, signed_values), 0), expected_signed);
  CHECK_EQ(Feature(HistogramAs<int8_t>(h, DataType::kInt8, signed_values), 0), expected_signed);
  CHECK_EQ(Feature(HistogramAs<int16_t>(h, DataType::kInt16, signed_values), 0), expected_signed);
  CHECK_EQ(Feature(HistogramAs<int32_t>(h, DataType::kInt32, signed_values), 0), expected_signed);
  CHECK_EQ(Feature(HistogramAs<int64_t>(h, DataType::kInt64, signed_values), 0), expected_signed);
  CHECK_EQ(Feature(HistogramAs<uint8_t>(h, DataType::kUint8, unsigned_values), 0),
           expected_unsigned);
  CHECK_EQ(Feature(HistogramAs<uint16_t>(h, DataType::kUint16, unsigned_values), 0),
           expected_unsigned);
  CHECK_EQ(Feature(HistogramAs<uint32_t>(h, DataType::kUint32, unsigned_values), 0),
           expected_unsigned);
  CHECK_EQ(Feature(HistogramAs<uint64_t>(h, DataType::kUint64, unsigned_values), 0),
           expected_unsigned);
  // FP16 and BF16 bit patterns of the signed values (all exact in both).
  std::vector<uint16_t> half = {0xc200, 0xbc00, 0x0000, 0x3c00, 0x4000, 0x4500, 0x5640, 0x4200,
                                0xc000};
  std::vector<uint16_t> bf16 = {0xc040, 0xbf80, 0x0000, 0x3f80, 0x4000, 0x40a0, 0x42c8, 0x4040,
                                0xc000};
  CHECK_EQ(Feature(Histogram(h, DataType::kFp16, half), 0), expected_signed);
  CHECK_EQ(Feature(Histogram(h, DataType::kBf16, bf16), 0), expected_signed);
  // BOOL: false and true as 0 and 1.
  std::vector<uint8_t> flags = {0, 1, 1, 0, 1};
  CHECK_EQ(Feature(Histogram(h, DataType::kBool, flags), 0), (Counts{0, 2, 3, 0, 0}));
  // 64-bit integers compare as double: 2^53 + 2 is above a bound of 2^53.
  ValueHistogrammer big({9007199254740992.0});
  const std::vector<int64_t> large = {9007199254740992LL, 9007199254740994LL};
  CHECK_EQ(Feature(Histogram(big, DataType::kInt64, large), 0), (Counts{1, 1}));
}

TEST_CASE(UnalignedFp32IsReadThroughTheConversion) {
  ValueHistogrammer h({0.5});
  const std::vector<float> values = {0.25f, 0.75f, 0.5f, kNan, 1.0f};
  std::vector<uint8_t> bytes(values.size() * 4 + 1);
  std::memcpy(bytes.data() + 1, values.data(), values.size() * 4);
  ValueCounts v;
  v.Reset(1, h.buckets());
  CHECK(h.Accumulate(DataType::kFp32, bytes.data() + 1, values.size(), 1, &v));
  CHECK_EQ(Feature(v, 0), (Counts{2, 2}));
  CHECK_EQ(v.nan, uint64_t{1});
}

float HalfReference(uint16_t bits) {
  const int sign = bits >> 15, exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  float value;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa == 0 ? std::numeric_limits<float>::infinity()
                          : std::numeric_limits<float>::quiet_NaN();
  } else {
    value = std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
  }
  return sign ? -value : value;
}

TEST_CASE(HalfToFloatIsExactForEveryBitPattern) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float got = HalfToFloat(static_cast<uint16_t>(bits));
    const float want = HalfReference(static_cast<uint16_t>(bits));
    if (std::isnan(want)) {
      CHECK_MSG(std::isnan(got), "bits " << bits);
    } else {
      CHECK_MSG(got == want && std::signbit(got) == std::signbit(want),
                "bits " << bits << ": " << got << " vs " << want);
    }
  }
  CHECK_EQ(Bfloat16ToFloat(0x3f80), 1.0f);
  CHECK_EQ(Bfloat16ToFloat(0xc000), -2.0f);
  CHECK(std::isnan(Bfloat16ToFloat(0x7fc0)));
}

TEST_CASE(BytesLengthHistogram) {
  ValueHistogrammer h({0, 3, 10});
  std::vector<uint8_t> framed;
  for (const std::string& s : {std::string(), std::string("abc"), std::string("abcd"),
                               std::string(20, 'x')}) {
    uint8_t header[4];
    WriteFramedLength(header, static_cast<uint32_t>(s.size()));
    framed.insert(framed.end(), header, header + 4);
    framed.insert(framed.end(), s.begin(), s.end());
  }
  ValueCounts v;
  v.Reset(1, h.buckets());
  CHECK(h.AccumulateLengths(framed.data(), framed.size(), 4, &v));
  CHECK_EQ(Feature(v, 0), (Counts{1, 1, 1, 1}));
  CHECK_EQ(v.sums[0], 27.0);
  CHECK_EQ(v.elements, uint64_t{4});
  // Framing that runs past the end stops the count.
  ValueCounts cut;
  cut.Reset(1, h.buckets());
  CHECK(!h.AccumulateLengths(framed.data(), framed.size() - 1, 4, &cut));
  CHECK_EQ(cut.elements, uint64_t{3});
}

TEST_CASE(ClassCountsAndOutOfRange) {
  const std::vector<int64_t> labels = {-1, 0, 3, 3, 9, 10, 3};
  Counts counts(11, 0);
  CountClasses(DataType::kInt64, reinterpret_cast<const uint8_t*>(labels.data()), labels.size(),
               10, counts.data());
  CHECK_EQ(counts, (Counts{1, 0, 0, 3, 0, 0, 0, 0, 0, 1, 2}));
  const std::vector<uint8_t> small = {0, 1, 1, 200};
  Counts three(3, 0);
  CountClasses(DataType::kUint8, small.data(), small.size(), 2, three.data());
  CHECK_EQ(three, (Counts{1, 2, 1}));
}

TEST_CASE(TopClassOfEachRow) {
  ValueHistogrammer h({0.5, 0.9});
  // Rows of 3 scores: argmax 1 (0.7), 0 (first of equal maxima 0.5), 2 (NaN skipped, 0.95),
  // a row of NaN (counted apart, its top is NaN).
  const std::vector<float> scores = {0.2f, 0.7f, 0.1f, 0.5f, 0.5f, 0.0f,
                                     kNan, 0.05f, 0.95f, kNan, kNan, kNan};
  Counts classes(4, 0);
  ValueCounts top;
  CountTopClasses(DataType::kFp32, reinterpret_cast<const uint8_t*>(scores.data()),
                  scores.size(), 3, classes.data(), h, &top);
  CHECK_EQ(classes, (Counts{1, 1, 1, 1}));
  CHECK_EQ(Feature(top, 0), (Counts{1, 1, 1}));
  CHECK_EQ(top.nan, uint64_t{1});
  // FP16 scores: the same rows' first two.
  const std::vector<uint16_t> half = {0x3266, 0x399a, 0x2e66, 0x3800, 0x3800, 0x0000};
  Counts half_classes(4, 0);
  CountTopClasses(DataType::kFp16, reinterpret_cast<const uint8_t*>(half.data()), half.size(),
                  3, half_classes.data(), h, &top);
  CHECK_EQ(half_classes, (Counts{1, 1, 0, 0}));
  CHECK_EQ(Feature(top, 0), (Counts{1, 1, 0}));
}

TEST_CASE(PopulationStabilityIndex) {
  const Counts same = {10, 20, 30};
  CHECK_EQ(PopulationStabilityIndex(same.data(), same.data(), 3), 0.0);
  const Counts current = {50, 50}, reference = {25, 75};
  // 0.25 ln 2 + (-0.25) ln(2/3)
  const double expected = 0.25 * std::log(2.0) - 0.25 * std::log(2.0 / 3.0);
  CHECK(std::fabs(PopulationStabilityIndex(current.data(), reference.data(), 2) - expected) <
        1e-12);
  // An empty reference bucket counts as kPsiFloor of it, not as zero.
  const Counts moved = {0, 100}, base = {100, 0};
  const double floor_psi = 2 * (1 - kPsiFloor) * std::log(1 / kPsiFloor);
  CHECK(std::fabs(PopulationStabilityIndex(moved.data(), base.data(), 2) - floor_psi) < 1e-9);
  const Counts empty = {0, 0};
  CHECK(std::isnan(PopulationStabilityIndex(empty.data(), reference.data(), 2)));
}

// ---- the monitor ----

ModelSpec Model() {
  ModelSpec model;
  model.name = "m";
  model.max_batch_size = 8;
  model.inputs = {{"x", DataType::kFp32, {3}}, {"text", DataType::kBytes, {1}},
                  {"any", DataType::kFp32, {-1}}};
  model.outputs = {{"label", DataType::kInt64, {1}}, {"scores", DataType::kFp32, {4}}};
  return model;
}

MonitorOptions Options() {
  MonitorOptions options;
  options.window_ns = 10 * kSecond;
  options.intervals = 10;
  MonitorTensorOptions x;
  x.name = "x";
  x.buckets = {0, 1};
  MonitorTensorOptions label;
  label.name = "label";
  label.input = false;
  label.classes = 4;
  MonitorTensorOptions scores;
  scores.name = "scores";
  scores.input = false;
  scores.top = true;
  scores.buckets = {0.5};
  options.tensors = {x, label, scores};
  return options;
}

struct Batch {
  BatchInputs inputs;
  BatchOutputs outputs;
};

// rows of x (3 values each), their labels and scores (4 each).
Batch MakeBatch(const ModelSpec& model, const std::vector<float>& x,
                const std::vector<int64_t>& labels, const std::vector<float>& scores) {
  Batch b;
  const int64_t rows = static_cast<int64_t>(labels.size());
  b.inputs.resize(model.inputs.size());
  b.inputs[0] = BatchTensor{&model.inputs[0], DataType::kFp32, {rows, 3}, BufferOf(x)};
  b.outputs.resize(2);
  b.outputs[0] = BatchTensor{&model.outputs[0], DataType::kInt64, {rows, 1}, BufferOf(labels)};
  b.outputs[1] = BatchTensor{&model.outputs[1], DataType::kFp32, {rows, 4}, BufferOf(scores)};
  return b;
}

std::unique_ptr<Monitor> MakeMonitor(const ModelSpec& model, const MonitorOptions& options,
                                     const Clock* clock) {
  std::unique_ptr<Monitor> monitor;
  Status status = Monitor::Create(options, model, clock, &monitor);
  CHECK_MSG(status.ok(), status.message());
  CHECK(monitor != nullptr);
  return monitor;
}

TEST_CASE(MonitorCountsNothingBeforeStart) {
  const ModelSpec model = Model();
  ManualClock clock;
  auto monitor = MakeMonitor(model, Options(), &clock);
  Batch b = MakeBatch(model, {0, 0, 0}, {1}, {0, 1, 0, 0});
  monitor->Record(b.inputs, b.outputs);  // warmup: before READY
  MonitorSnapshot s = monitor->Snapshot();
  CHECK(!s.running);
  CHECK_EQ(s.batches_seen, uint64_t{0});
  CHECK_EQ(s.tensors[0].total.values.elements, uint64_t{0});
  monitor->Start();
  monitor->Record(b.inputs, b.outputs);
  s = monitor->Snapshot();
  CHECK(s.running);
  CHECK_EQ(s.batches_sampled, uint64_t{1});
  CHECK_EQ(s.tensors[0].total.values.elements, uint64_t{3});
}

TEST_CASE(MonitorWindowAgesOutWholeIntervals) {
  const ModelSpec model = Model();
  ManualClock clock;
  auto monitor = MakeMonitor(model, Options(), &clock);
  monitor->Start();
  // t = 0: x pooled {-1, 0} <= 0, {0.5, 1} in (0, 1], {2} above, one NaN; labels 1 and 3;
  // scores' tops: class 1 (0.7, above 0.5) and class 2 (0.5, <= 0.5).
  Batch a = MakeBatch(model, {0, 0.5f, 2, 1, -1, kNan}, {1, 3},
                      {0.1f, 0.7f, 0.1f, 0.1f, 0.2f, 0.2f, 0.5f, 0.1f});
  monitor->Record(a.inputs, a.outputs);
  clock.Advance(5 * kSecond);
  Batch b = MakeBatch(model, {5, 5, 5}, {3}, {0, 0, 0, 1});
  monitor->Record(b.inputs, b.outputs);

  MonitorSnapshot s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].window.values.counts, (Counts{2, 2, 4}));
  CHECK_EQ(s.tensors[0].window.values.nan, uint64_t{1});
  CHECK_EQ(s.tensors[1].window.classes, (Counts{0, 1, 0, 2, 0}));
  CHECK_EQ(s.tensors[2].window.classes, (Counts{0, 1, 1, 1, 0}));
  CHECK_EQ(s.tensors[2].window.values.counts, (Counts{1, 2}));
  CHECK_EQ(s.tensors[1].class_count, int64_t{4});
  CHECK_EQ(s.tensors[2].class_count, int64_t{4});

  // t = 10.5 s: interval 10; the window holds intervals 1..10, so batch a (interval 0) left
  // it; the totals keep everything.
  clock.Advance(5 * kSecond + kSecond / 2);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].window.values.counts, (Counts{0, 0, 3}));
  CHECK_EQ(s.tensors[0].window.values.nan, uint64_t{0});
  CHECK_EQ(s.tensors[0].total.values.counts, (Counts{2, 2, 4}));
  CHECK_EQ(s.tensors[1].window.classes, (Counts{0, 0, 0, 1, 0}));
  CHECK_EQ(s.tensors[1].total.classes, (Counts{0, 1, 0, 2, 0}));

  // A batch in interval 10 reuses batch a's slot, cleared first.
  Batch c = MakeBatch(model, {-5, -5, -5}, {0}, {1, 0, 0, 0});
  monitor->Record(c.inputs, c.outputs);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].window.values.counts, (Counts{3, 0, 3}));
  // t = 16 s: intervals 7..16: only c.
  clock.Advance(5 * kSecond + kSecond / 2);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].window.values.counts, (Counts{3, 0, 0}));
  CHECK_EQ(s.tensors[0].total.values.counts, (Counts{5, 2, 4}));
  CHECK_EQ(s.batches_sampled, uint64_t{3});
  // 30 s later nothing is left in the window.
  clock.Advance(30 * kSecond);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].window.values.Finite(), uint64_t{0});
  CHECK_EQ(s.tensors[0].total.values.Finite(), uint64_t{11});
}

TEST_CASE(MonitorSamplesEveryNthBatch) {
  const ModelSpec model = Model();
  ManualClock clock;
  MonitorOptions options = Options();
  options.sample_every = 3;
  auto monitor = MakeMonitor(model, options, &clock);
  monitor->Start();
  Batch b = MakeBatch(model, {0, 0, 0}, {1}, {0, 1, 0, 0});
  for (int i = 0; i < 7; ++i) monitor->Record(b.inputs, b.outputs);
  MonitorSnapshot s = monitor->Snapshot();
  CHECK_EQ(s.batches_seen, uint64_t{7});
  CHECK_EQ(s.batches_sampled, uint64_t{3});  // the 1st, 4th and 7th
  CHECK_EQ(s.tensors[1].total.classes, (Counts{0, 3, 0, 0, 0}));
  // Start again: everything from zero.
  monitor->Start();
  s = monitor->Snapshot();
  CHECK_EQ(s.batches_seen, uint64_t{0});
  CHECK_EQ(s.tensors[1].total.classes, (Counts{0, 0, 0, 0, 0}));
}

TEST_CASE(MonitorPerFeatureDriftAgainstAFileReference) {
  const ModelSpec model = Model();
  ManualClock clock;
  MonitorOptions options = Options();
  options.tensors[0].per_feature = true;
  auto monitor = MakeMonitor(model, options, &clock);
  // Reference: feature 0 always <= 0, feature 1 half (0, 1] half above, feature 2 above 1.
  const std::vector<float> reference = {0, 0.5f, 9, 0, 3, 9};
  CHECK(monitor->SetReference(0, DataType::kFp32,
                              reinterpret_cast<const uint8_t*>(reference.data()),
                              reference.size() * 4)
            .ok());
  monitor->Start();
  MonitorSnapshot s = monitor->Snapshot();
  CHECK(s.tensors[0].has_reference);
  CHECK_EQ(s.tensors[0].reference_source, std::string("file"));
  CHECK(std::isnan(s.tensors[0].psi[0]));  // no data yet
  // The same distribution: no drift on any feature.
  Batch same = MakeBatch(model, {0, 3, 9, 0, 0.5f, 9}, {1, 1}, {0, 1, 0, 0, 0, 1, 0, 0});
  monitor->Record(same.inputs, same.outputs);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].psi, (std::vector<double>{0, 0, 0}));
  CHECK_EQ(s.tensors[0].psi_pooled, 0.0);
  // Feature 0 moves to (0, 1]: its score jumps, the others stay at 0.
  Batch moved = MakeBatch(model, {1, 3, 9, 1, 0.5f, 9}, {1, 1}, {0, 1, 0, 0, 0, 1, 0, 0});
  monitor->Record(moved.inputs, moved.outputs);
  s = monitor->Snapshot();
  const Counts current = {2, 2, 0}, base = {2, 0, 0};
  CHECK(std::fabs(s.tensors[0].psi[0] -
                  PopulationStabilityIndex(current.data(), base.data(), 3)) < 1e-12);
  CHECK(s.tensors[0].psi[0] > 1.0);
  CHECK_EQ(s.tensors[0].psi[1], 0.0);
  CHECK_EQ(s.tensors[0].psi[2], 0.0);
  // Whole rows only.
  CHECK(!monitor->SetReference(0, DataType::kFp32,
                               reinterpret_cast<const uint8_t*>(reference.data()), 16)
             .ok());
  CHECK(!monitor->SetReference(1, DataType::kFp32,
                               reinterpret_cast<const uint8_t*>(reference.data()), 12)
             .ok());  // an output
}

TEST_CASE(MonitorFirstWindowServesAsReference) {
  const ModelSpec model = Model();
  ManualClock clock;
  MonitorOptions options = Options();
  options.tensors[0].reference_first_window = true;
  auto monitor = MakeMonitor(model, options, &clock);
  monitor->Start();
  clock.Advance(kSecond);
  Batch a = MakeBatch(model, {0, 0.5f, 2}, {1}, {0, 1, 0, 0});
  monitor->Record(a.inputs, a.outputs);
  clock.Advance(4 * kSecond);
  MonitorSnapshot s = monitor->Snapshot();
  CHECK(!s.tensors[0].has_reference);  // the first window is still running
  clock.Advance(5 * kSecond);            // t = 10 s: it is complete
  s = monitor->Snapshot();
  CHECK(s.tensors[0].has_reference);
  CHECK_EQ(s.tensors[0].reference_source, std::string("first_window"));
  CHECK_EQ(s.tensors[0].reference.values.counts, (Counts{1, 1, 1}));
  CHECK_EQ(s.tensors[0].psi_pooled, 0.0);
  // Later batches do not change the reference; they do move the score.
  Batch b = MakeBatch(model, {5, 5, 5}, {1}, {0, 1, 0, 0});
  monitor->Record(b.inputs, b.outputs);
  s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].reference.values.counts, (Counts{1, 1, 1}));
  CHECK(s.tensors[0].psi_pooled > 0.1);
}

TEST_CASE(MonitorBytesInputCountsLengths) {
  const ModelSpec model = Model();
  ManualClock clock;
  MonitorOptions options;
  MonitorTensorOptions text;
  text.name = "text";
  text.buckets = {2};
  options.tensors = {text};
  auto monitor = MakeMonitor(model, options, &clock);
  monitor->Start();
  std::vector<uint8_t> framed = {1, 0, 0, 0, 'a', 3, 0, 0, 0, 'a', 'b', 'c'};
  Batch b;
  b.inputs.resize(3);
  b.inputs[1] = BatchTensor{&model.inputs[1], DataType::kBytes, {2, 1}, BufferOf(framed)};
  b.outputs.resize(2);
  monitor->Record(b.inputs, b.outputs);
  MonitorSnapshot s = monitor->Snapshot();
  CHECK_EQ(s.tensors[0].total.values.counts, (Counts{1, 1}));
  CHECK_EQ(s.tensors[0].total.values.sums[0], 4.0);
}

TEST_CASE(MonitorOptionsAreChecked) {
  const ModelSpec model = Model();
  auto error = [&](const MonitorOptions& options) {
    return Monitor::Check(options, model).message();
  };
  MonitorOptions options = Options();
  CHECK(Monitor::Check(options, model).ok());
  options.tensors[0].name = "nope";
  CHECK_CONTAINS(error(options), "input 'nope': the model has no such input");
  options = Options();
  options.tensors[0].buckets = {1, 1};
  CHECK_CONTAINS(error(options), "strictly increasing");
  options = Options();
  options.tensors[0].buckets = {};
  CHECK_CONTAINS(error(options), "needs buckets");
  options = Options();
  options.tensors[0].name = "any";
  options.tensors[0].per_feature = true;
  CHECK_CONTAINS(error(options), "per_feature needs fixed dims");
  options = Options();
  options.tensors[1].classes = 0;
  CHECK_CONTAINS(error(options), "needs classes, buckets or top");
  options = Options();
  options.tensors[2].top = false;
  options.tensors[2].classes = 3;
  CHECK_CONTAINS(error(options), "classes counts integer outputs, got FP32");
  options = Options();
  options.tensors[1].top = true;
  CHECK_CONTAINS(error(options), "top needs scores");
  options = Options();
  options.tensors[2].classes = 5;
  CHECK_CONTAINS(error(options), "classes 5 differs from the last dimension 4");
  options = Options();
  options.tensors.push_back(options.tensors[0]);
  CHECK_CONTAINS(error(options), "input 'x' is monitored twice");
  options = Options();
  options.sample_every = 0;
  CHECK_CONTAINS(error(options), "sample_every");
  options = Options();
  options.tensors[1].reference_first_window = true;
  CHECK_CONTAINS(error(options), "are for inputs");
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
