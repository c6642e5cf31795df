// Tests of the GPU engine (core/gpu_engine.h) over the fake CUDA driver, with a DeviceKernel
// written here: the fake's device memory is host memory, so the kernel computes OUT = IN + 1
// straight from the device pointers (its work is done when "enqueued", as the fake's copies).
// Under a scheduler, as the server runs it: contexts, streams, device buffers kept between
// batches, the copies each way, pinned staging and its fallback, every CUDA error named by its
// call, kernel mistakes, and the device-side timing split.

#include <chrono>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/completion.h"
#include "core/completion_queue.h"
#include "core/gpu_engine.h"
#include "core/pinned_pool.h"
#include "core/scheduler.h"
#include "tests/check.h"
#include "tests/core_support.h"
#include "tests/fake_cuda.h"

namespace pyserver {
namespace core {
namespace {

using ::pyserver::testing::FakeCuda;
using Floats = std::vector<float>;
constexpr int64_t kWidth = 4;

enum class Mode {
  kPlusOne,        // OUT = IN + 1 in the instance's device memory
  kSetOwn,         // OUT = IN * 2 in memory of the kernel's own (DeviceOutputs::Set)
  kSetOwnFp64,     // ... of the wrong datatype
  kSlow,           // kPlusOne, then 100 ms "on the device"
  kAllocateTwice,  // mistakes:
  kAbsurdShape,
  kNegativeShape,
  kNothing,
  kNoCopyBack,
  kFail,
};

constexpr std::chrono::milliseconds kSlowKernel(100);

struct Seen {
  uint64_t stream = 0;
  int gpu = -1;
  Shape shape;
  std::string output;
};

class TestKernel final : public DeviceKernel {
 public:
  TestKernel(Mode mode, std::shared_ptr<CudaDriver> driver, CUstream producer = nullptr)
      : mode_(mode), driver_(std::move(driver)), producer_(producer) {}

  Status Execute(CUstream stream, const std::vector<DeviceTensor>& inputs,
                 DeviceOutputs* outputs, const std::function<Status()>& copy_back) override {
    const DeviceTensor& in = inputs.at(0);
    {
      Seen seen;
      seen.stream = reinterpret_cast<uint64_t>(stream);
      driver_->CurrentDevice(&seen.gpu);
      seen.shape = in.shape;
      seen.output = outputs->slot(0).spec->name;
      std::lock_guard<std::mutex> lock(mu_);
      seen_.push_back(std::move(seen));
    }
    const size_t n = in.bytes / sizeof(float);
    const float* x = reinterpret_cast<const float*>(in.ptr);  // host memory under the fake
    Status status;
    CUdeviceptr out = 0;
    switch (mode_) {
      case Mode::kPlusOne:
      case Mode::kSlow:
        status = outputs->Allocate(0, in.shape, &out);
        if (!status.ok()) return status;
        for (size_t k = 0; k < n; ++k) reinterpret_cast<float*>(out)[k] = x[k] + 1;
        if (mode_ == Mode::kSlow) std::this_thread::sleep_for(kSlowKernel);
        return copy_back();
      case Mode::kSetOwn:
        own_.resize(n);
        for (size_t k = 0; k < n; ++k) own_[k] = x[k] * 2;
        status = outputs->Set(0, in.shape, DataType::kFp32,
                              reinterpret_cast<CUdeviceptr>(own_.data()), producer_);
        return status.ok() ? copy_back() : status;
      case Mode::kSetOwnFp64:
        own64_.assign(n, 0.0);
        status = outputs->Set(0, in.shape, DataType::kFp64,
                              reinterpret_cast<CUdeviceptr>(own64_.data()));
        return status.ok() ? copy_back() : status;
      case Mode::kAllocateTwice:
        status = outputs->Allocate(0, in.shape, &out);
        if (status.ok()) status = outputs->Allocate(0, in.shape, &out);
        return status;
      case Mode::kAbsurdShape:  // 2**61 + 1 FP32 elements: no size arithmetic may overflow
        return outputs->Allocate(0, {(int64_t{1} << 61) + 1}, &out);
      case Mode::kNegativeShape:
        return outputs->Allocate(0, {-3, kWidth}, &out);
      case Mode::kNothing:
        return copy_back();
      case Mode::kNoCopyBack:
        return outputs->Allocate(0, in.shape, &out);
      case Mode::kFail:
        return Status::Internal("kernel launch failed");
    }
    return Status::Internal("unknown mode");
  }

  std::vector<Seen> seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return seen_;
  }

 private:
  const Mode mode_;
  std::shared_ptr<CudaDriver> driver_;
  CUstream producer_;
  std::vector<float> own_;    // worker thread only
  std::vector<double> own64_;
  std::mutex mu_;
  std::vector<Seen> seen_;
};

// The fake driver, a pinned pool over it, and a scheduler over GPU engines with test kernels.
// Model "gpu_model": FP32 "IN" [4] -> FP32 "OUT" [4] (BYTES with bytes = true).
class GpuModel {
 public:
  struct Instance {
    int gpu = 0;
    Mode mode = Mode::kPlusOne;
    CUstream producer = nullptr;
  };

  explicit GpuModel(std::vector<Instance> instances, int64_t max_batch_size = 8,
           size_t pool_bytes = 1 << 20, DataType dtype = DataType::kFp32,
           std::function<void(FakeCuda&)> before_start = nullptr,
           testing::Location where = PYSERVER_CALLER)
      : fake_(2, where) {
    if (before_start) before_start(fake_);
    PinnedPoolOptions pool_options;
    pool_options.pool_bytes = pool_bytes;
    pool_options.source = std::make_shared<CudaPinnedSource>(fake_.driver());
    pool_ = PinnedPool::Create(pool_options);
    std::vector<std::shared_ptr<Engine>> engines;
    for (const Instance& instance : instances) {
      auto kernel = std::make_shared<TestKernel>(instance.mode, fake_.driver(), instance.producer);
      GpuEngineOptions options;
      options.gpu = instance.gpu;
      options.driver = fake_.driver();
      options.pool = pool_;
      options.kernel = kernel;
      kernels_.push_back(kernel);
      engines_.push_back(std::make_shared<GpuEngine>(options));
      engines.push_back(engines_.back());
    }
    SchedulerOptions options;
    options.model.name = "gpu_model";
    options.model.max_batch_size = max_batch_size;
    options.model.inputs = {TensorSpec{"IN", dtype, {kWidth}}};
    options.model.outputs = {TensorSpec{"OUT", dtype, {kWidth}}};
    Status status = CompletionQueue::Create(&queue_);
    if (status.ok()) status = Scheduler::Create(options, engines, queue_, &scheduler_);
    CHECK_MSG_AT(where, status.ok(), status.message());
  }
  ~GpuModel() { Stop(); }

  // Each input as one request (ids 1, 2, ...: its index + 1), submitted under hold so that they
  // form one batch (as far as max_batch_size allows); their completions, by id.
  std::map<uint64_t, Completion> Run(const std::vector<Floats>& batches,
                                     testing::Location where = PYSERVER_CALLER) {
    scheduler_->Hold(batches.size());
    const uint64_t first = next_id_;
    for (const Floats& data : batches) {
      Submit(next_id_++, data, {static_cast<int64_t>(data.size()) / kWidth, kWidth});
    }
    scheduler_->Hold(0);
    std::vector<Completion> got = Wait(batches.size(), where);
    std::map<uint64_t, Completion> by_id;
    for (Completion& c : got) by_id[c.request_id - first + 1] = std::move(c);
    return by_id;
  }

  std::vector<Completion> Wait(size_t n, testing::Location where = PYSERVER_CALLER) {
    std::vector<Completion> got = WaitCompletions(*queue_, n);
    CHECK_MSG_AT(where, got.size() == n, "expected " << n << " completions, got " << got.size());
    return got;
  }

  void Submit(uint64_t id, const Floats& data, Shape shape) {
    inputs_.push_back(data);
    SubmitBytes(id, reinterpret_cast<const uint8_t*>(inputs_.back().data()),
                inputs_.back().size() * sizeof(float), std::move(shape));
  }

  void SubmitBytes(uint64_t id, const uint8_t* data, size_t bytes, Shape shape) {
    auto request = std::make_unique<Request>();
    request->id = id;
    InputData input;
    input.data = data;
    input.bytes = bytes;
    input.shape = std::move(shape);
    request->inputs.push_back(std::move(input));
    scheduler_->Submit(std::move(request));
  }

  // Stops the scheduler: its workers free their device state and release their contexts.
  void Stop() {
    if (scheduler_ != nullptr) scheduler_->Stop();
    if (queue_ != nullptr) queue_->Close();
  }

  FakeCuda& fake() { return fake_; }
  PinnedPool& pool() { return *pool_; }
  GpuEngine& engine(size_t i = 0) { return *engines_.at(i); }
  TestKernel& kernel(size_t i = 0) { return *kernels_.at(i); }
  StatsSnapshot stats() { return scheduler_->stats().Snapshot(); }
  // Stops and destroys the scheduler, engines and kernels and lets go of the pool: what is
  // left of the pool lives in the pieces still held (answers' views), and goes with the last.
  void Discard() {
    Stop();
    scheduler_.reset();
    engines_.clear();
    kernels_.clear();
    pool_.reset();
  }

 private:
  FakeCuda fake_;
  std::deque<Floats> inputs_;  // alive until the model goes (after the scheduler stopped)
  std::shared_ptr<PinnedPool> pool_;
  std::vector<std::shared_ptr<TestKernel>> kernels_;
  std::vector<std::shared_ptr<GpuEngine>> engines_;
  std::shared_ptr<CompletionQueue> queue_;
  std::unique_ptr<Scheduler> scheduler_;
  uint64_t next_id_ = 1;
};

Floats Iota(int64_t rows, float start = 0) {
  Floats out(static_cast<size_t>(rows * kWidth));
  for (size_t k = 0; k < out.size(); ++k) out[k] = start + static_cast<float>(k);
  return out;
}

Floats OutputFloats(const Completion& c, testing::Location where = PYSERVER_CALLER) {
  CHECK_MSG_AT(where, c.status.ok(), c.status.message());
  CHECK_EQ_AT(where, c.outputs.size(), size_t{1});
  const OutputView& view = c.outputs[0];
  Floats out(view.bytes / sizeof(float));
  std::memcpy(out.data(), view.owner->data() + view.offset, view.bytes);
  return out;
}

Floats Plus(const Floats& in, float add, float times = 1) {
  Floats out;
  for (float x : in) out.push_back(x * times + add);
  return out;
}

// ---- 1. The way through -------------------------------------------------------------------------

TEST_CASE(ABatchGoesToTheGpuAndBack) {
  GpuModel m({{1, Mode::kPlusOne}}, 8);
  const Floats a = Iota(2), b = Iota(3, 10);
  std::map<uint64_t, Completion> got = m.Run({a, b});
  CHECK_EQ(OutputFloats(got[1]), Plus(a, 1));
  CHECK_EQ(OutputFloats(got[2]), Plus(b, 1));
  CHECK_EQ(got[1].outputs[0].shape, (Shape{2, kWidth}));
  // One batch of 5 rows: one copy in for the one input, one copy out for the one output, on
  // the instance's stream, in GPU 1's context.
  std::vector<Seen> seen = m.kernel().seen();
  CHECK_EQ(seen.size(), size_t{1});
  CHECK_EQ(seen[0].shape, (Shape{5, kWidth}));
  CHECK_EQ(seen[0].gpu, 1);
  CHECK_EQ(seen[0].output, std::string("OUT"));
  CHECK(seen[0].stream != 0 && seen[0].stream == m.engine().stream_handle());
  FakeCuda& fake = m.fake();
  CHECK_EQ(fake.Counter("htod"), 1LL);
  CHECK_EQ(fake.Counter("htod_bytes"), 5LL * kWidth * 4);
  CHECK_EQ(fake.Counter("dtoh"), 1LL);
  CHECK_EQ(fake.Counter("dtoh_bytes"), 5LL * kWidth * 4);
  const GpuEngine::CopyTotals totals = m.engine().copy_totals();
  CHECK_EQ(totals.htod_bytes, uint64_t{5 * kWidth * 4});
  CHECK_EQ(totals.dtoh_bytes, uint64_t{5 * kWidth * 4});

  m.Stop();  // the worker cleans up: stream, events and device memory freed, context released
  CHECK_EQ(fake.Counter("stream_create"), 1LL);
  CHECK_EQ(fake.Counter("stream_destroy"), 1LL);
  CHECK_EQ(fake.Counter("event_create"), 4LL);
  CHECK_EQ(fake.Counter("event_destroy"), 4LL);
  CHECK_EQ(fake.Counter("device_bytes"), 0LL);
  CHECK_EQ(fake.Counter("mem_alloc"), fake.Counter("mem_free"));
  CHECK_EQ(m.engine().device_memory_bytes(), int64_t{0});
  // The worker's reference is back; the pool's region still holds one, until its last piece.
  CHECK_EQ(fake.Counter("retain"), 2LL);
  CHECK_EQ(fake.Counter("release"), 1LL);
  m.Discard();
  CHECK_EQ(fake.Counter("host_free"), 0LL);  // the answers' views still hold a piece
  got.clear();
  CHECK_EQ(fake.Counter("host_free"), 1LL);
  CHECK_EQ(fake.Counter("release"), 2LL);
}

TEST_CASE(EachInstanceHasItsStreamAndSetsItsContextOnce) {
  GpuModel m({{0}, {0}, {1}}, 1);
  std::vector<Floats> inputs;
  for (int i = 0; i < 30; ++i) inputs.push_back(Floats(kWidth, static_cast<float>(i)));
  // Thirty single-row batches over three instances.
  std::map<uint64_t, Completion> got = m.Run(inputs);
  for (int i = 0; i < 30; ++i) CHECK_EQ(OutputFloats(got[i + 1]), Floats(kWidth, i + 1.0f));
  std::vector<uint64_t> streams;
  size_t batches = 0;
  for (size_t e = 0; e < 3; ++e) {
    streams.push_back(m.engine(e).stream_handle());
    CHECK(streams.back() != 0);
    for (const Seen& seen : m.kernel(e).seen()) {
      CHECK_EQ(seen.stream, streams.back());
      CHECK_EQ(seen.gpu, m.engine(e).gpu());
      ++batches;
    }
    CHECK(m.engine(e).device_memory_bytes() > 0);
  }
  CHECK_EQ(batches, size_t{30});
  CHECK(streams[0] != streams[1] && streams[1] != streams[2] && streams[0] != streams[2]);
  FakeCuda& fake = m.fake();
  CHECK_EQ(fake.Counter("set_current"), 3LL);  // once per worker, however many batches ran
  CHECK_EQ(fake.Counter("stream_create"), 3LL);
  CHECK_EQ(fake.Counter("htod"), 30LL);
  CHECK_EQ(fake.Counter("dtoh"), 30LL);
  CHECK_EQ(fake.Counter("mem_alloc"), 6LL);  // kept between batches: one in, one out each
}

TEST_CASE(DeviceBuffersGrowToTheLargestBatchAndStay) {
  GpuModel m({{0}}, 64);
  m.Run({Iota(1)});  // 16 bytes: the smallest buffers, 256 bytes each way
  CHECK_EQ(m.engine().device_memory_bytes(), int64_t{512});
  std::map<uint64_t, Completion> got = m.Run({Iota(64)});  // 1 KiB each way
  CHECK_EQ(OutputFloats(got[1]), Plus(Iota(64), 1));
  CHECK_EQ(m.engine().device_memory_bytes(), int64_t{2048});
  m.Run({Iota(1)});
  CHECK_EQ(m.engine().device_memory_bytes(), int64_t{2048});
  CHECK_EQ(m.fake().Counter("mem_alloc"), 4LL);
  CHECK_EQ(m.fake().Counter("mem_free"), 2LL);
  CHECK_EQ(m.fake().Counter("device_bytes"), 2048LL);
}

// ---- 2. Pinned staging --------------------------------------------------------------------------

TEST_CASE(InputsAndOutputsAreStagedInPinnedMemory) {
  GpuModel m({{0}}, 8);
  std::map<uint64_t, Completion> got = m.Run({Iota(2)});
  PinnedPoolStats s = m.pool().stats();
  CHECK_EQ(s.pool_bytes, uint64_t{1 << 20});
  CHECK_EQ(s.pinned_allocations, uint64_t{2});  // the gathered input, the copied-back output
  CHECK_EQ(s.fallback_allocations, uint64_t{0});
  CHECK_EQ(m.engine().pinned_bytes(), int64_t{256});  // the answer's view holds the output's
  CHECK_EQ(m.fake().Counter("host_alloc"), 1LL);      // the pool's one region
  got.clear();
  CHECK_EQ(m.pool().stats().pinned_in_use, uint64_t{0});
  CHECK_EQ(m.engine().pinned_bytes(), int64_t{0});
}

TEST_CASE(StagingFallsBackWhenThePoolIsFull) {
  GpuModel m({{0}}, 64, 256);  // room for one small piece only
  const Floats a = Iota(64);   // 1 KiB: larger than the pool
  std::map<uint64_t, Completion> got = m.Run({a});
  CHECK_EQ(OutputFloats(got[1]), Plus(a, 1));
  PinnedPoolStats s = m.pool().stats();
  CHECK_EQ(s.fallback_allocations, uint64_t{2});
  CHECK_EQ(s.pinned_allocations, uint64_t{0});
  CHECK_EQ(s.fallback_in_use, uint64_t{1024});  // the answer's; the input's is back
  CHECK_EQ(m.engine().fallback_bytes(), int64_t{1024});
  got.clear();
  CHECK_EQ(m.pool().stats().fallback_in_use, uint64_t{0});
  CHECK_EQ(m.engine().fallback_bytes(), int64_t{0});
}

// ---- 3. Failures --------------------------------------------------------------------------------

// A CUDA call that fails fails its batch, naming the GPU and the call; the next batch runs.
TEST_CASE(ACudaErrorFailsItsBatchNamingTheCall) {
  for (const char* call : {"cuMemcpyHtoDAsync_v2", "cuMemAlloc_v2", "cuMemcpyDtoHAsync_v2",
                           "cuStreamSynchronize"}) {
    GpuModel m({{0}}, 64);
    // The first batch makes the smallest buffers (256 bytes); the second needs 1 KiB, so it
    // reaches cuMemAlloc_v2 again.
    m.Run({Iota(1)});
    m.fake().FailNext(call);
    std::map<uint64_t, Completion> failed = m.Run({Iota(64)});
    const Status& status = failed[1].status;
    CHECK_MSG(status.code() == StatusCode::kInternal, call << ": " << status.code());
    CHECK_EQ(status.message().rfind("GPU 0: ", 0), size_t{0});  // the prefix, once
    CHECK_EQ(status.message().find("GPU 0: ", 1), std::string::npos);
    CHECK_CONTAINS(status.message(), std::string(call) + ": CUDA_ERROR_OUT_OF_MEMORY");
    CHECK(failed[1].outputs.empty());
    std::map<uint64_t, Completion> again = m.Run({Iota(64)});
    CHECK_EQ(OutputFloats(again[1]), Plus(Iota(64), 1));
    CHECK_EQ(m.stats().fail_by_reason[static_cast<size_t>(FailureReason::kBackend)], uint64_t{1});
    m.Stop();
    CHECK_EQ(m.fake().Counter("device_bytes"), 0LL);
    CHECK_EQ(m.fake().Counter("mem_alloc"), m.fake().Counter("mem_free"));
  }
}

TEST_CASE(AStreamThatCannotBeCreatedFailsEveryBatchClearly) {
  GpuModel m({{0}}, 8, 1 << 20, DataType::kFp32,
             [](FakeCuda& fake) { fake.FailNext("cuStreamCreate"); });
  for (int i = 0; i < 2; ++i) {
    std::map<uint64_t, Completion> got = m.Run({Iota(1)});
    CHECK_EQ(got[1].status.code(), StatusCode::kUnavailable);
    CHECK_EQ(got[1].status.message(),
             std::string("GPU 0: cuStreamCreate: CUDA_ERROR_OUT_OF_MEMORY (out of memory)"));
  }
  // The pool was not touched from a thread without a working context.
  CHECK_EQ(m.fake().Counter("host_alloc"), 0LL);
  CHECK_EQ(m.pool().reserve_error(), std::string());
  m.Stop();
  CHECK_EQ(m.fake().Counter("retain"), m.fake().Counter("release"));
}

TEST_CASE(KernelMistakesFailTheirBatchAlone) {
  struct Case {
    Mode mode;
    const char* message;
  };
  const std::vector<Case> cases = {
      {Mode::kAllocateTwice, "GPU 0: output 'OUT': already allocated or set"},
      {Mode::kAbsurdShape, "GPU 0: output 'OUT': invalid shape [2305843009213693953] of FP32"},
      {Mode::kNegativeShape, "GPU 0: output 'OUT': invalid shape [-3, 4] of FP32"},
      {Mode::kNothing, "GPU 0: output 'OUT': the engine did not produce it"},
      {Mode::kNoCopyBack, "GPU 0: the engine returned without its outputs' copy back"},
      {Mode::kFail, "GPU 0: kernel launch failed"},
      {Mode::kSetOwnFp64, "output 'OUT': the engine produced FP64; the model config says FP32"},
  };
  for (const Case& c : cases) {
    GpuModel m({{0, c.mode}}, 8);
    std::map<uint64_t, Completion> got = m.Run({Iota(1)});
    CHECK_MSG(!got[1].status.ok(), c.message);
    CHECK_EQ(got[1].status.message(), std::string(c.message));
    m.Stop();
    CHECK_EQ(m.fake().Counter("device_bytes"), 0LL);
    CHECK_EQ(m.pool().stats().pinned_in_use, uint64_t{0});
  }
}

TEST_CASE(BytesTensorsDoNotGoToAGpu) {
  GpuModel m({{0}}, 8, 1 << 20, DataType::kBytes);
  const std::vector<uint8_t> framed = {1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b',
                                       1, 0, 0, 0, 'c', 1, 0, 0, 0, 'd'};
  m.SubmitBytes(1, framed.data(), framed.size(), {1, kWidth});
  std::vector<Completion> got = m.Wait(1);
  CHECK_EQ(got[0].status.code(), StatusCode::kInternal);
  CHECK_EQ(got[0].status.message(),
           std::string("GPU 0: input 'IN': BYTES tensors cannot go to a GPU"));
  CHECK_EQ(m.fake().Counter("htod"), 0LL);
}

// ---- 4. A kernel's own memory -------------------------------------------------------------------

TEST_CASE(AKernelMayHandOverItsOwnDeviceMemory) {
  const Floats a = Iota(3);
  {
    GpuModel m({{0, Mode::kSetOwn}}, 8);
    std::map<uint64_t, Completion> got = m.Run({a});
    CHECK_EQ(OutputFloats(got[1]), Plus(a, 0, 2));
    CHECK_EQ(m.fake().Counter("mem_alloc"), 1LL);  // the input's buffer only
    CHECK_EQ(m.fake().Counter("sync_default"), 0LL);
  }
  {
    // Written on the legacy default stream: the copy back waits for it first.
    GpuModel m({{0, Mode::kSetOwn, reinterpret_cast<CUstream>(1)}}, 8);
    std::map<uint64_t, Completion> got = m.Run({a});
    CHECK_EQ(OutputFloats(got[1]), Plus(a, 0, 2));
    CHECK_EQ(m.fake().Counter("sync_default"), 1LL);
  }
}

// ---- 5. Timing on the device ----------------------------------------------------------------------

TEST_CASE(DeviceEventsSplitTheCopiesFromTheModel) {
  GpuModel m({{0, Mode::kSlow}}, 8);
  m.Run({Iota(2)});
  const StatsSnapshot s = m.stats();
  const auto slow_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(kSlowKernel).count());
  // The kernel's sleep falls between the marks after the copies in and before the copies back.
  CHECK(s.compute_infer.ns >= slow_ns);
  CHECK(s.compute_input.ns < slow_ns);
  CHECK(s.compute_output.ns < slow_ns);
  CHECK_EQ(m.fake().Counter("event_record"), 4LL);  // four marks for the one batch
}

TEST_CASE(WithoutEventsTheWholeBatchIsComputeInfer) {
  GpuModel m({{0, Mode::kSlow}}, 8, 1 << 20, DataType::kFp32,
             [](FakeCuda& fake) { fake.FailNext("cuEventCreate"); });
  std::map<uint64_t, Completion> got = m.Run({Iota(2)});
  CHECK_EQ(OutputFloats(got[1]), Plus(Iota(2), 1));  // timing is lost, not the batch
  const StatsSnapshot s = m.stats();
  CHECK(s.compute_infer.ns >= static_cast<uint64_t>(
                                  std::chrono::duration_cast<std::chrono::nanoseconds>(kSlowKernel)
                                      .count()));
  CHECK_EQ(m.fake().Counter("event_record"), 0LL);
  CHECK_EQ(m.fake().Counter("event_create"), 0LL);
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
