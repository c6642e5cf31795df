#include "core/instance.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "core/clock.h"
#include "core/monitor.h"

namespace pyserver {
namespace core {

Instance::Instance(InstanceOptions options) : options_(std::move(options)) {}

Instance::~Instance() { Stop(); }

void Instance::Start() { worker_ = std::thread(&Instance::WorkerLoop, this); }

void Instance::Run(std::unique_ptr<Batch> batch) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch_ = std::move(batch);
    state_ = State::kAssigned;
  }
  // Wake the worker after unlocking: it has a batch to run.
  cv_.notify_one();
}

void Instance::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
  }
  // Wake the worker after unlocking: if idle it should exit now.
  cv_.notify_one();
  if (worker_.joinable()) worker_.join();
}

void Instance::WorkerLoop() {
  options_.engine->OnWorkerStart();
  for (;;) {
    std::unique_ptr<Batch> batch;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return batch_ != nullptr || stop_requested_; });
      // An assigned batch runs even when stopping: its requests were promised an answer.
      if (batch_ == nullptr) {
        state_ = State::kStopped;
        break;
      }
      batch = std::move(batch_);
      state_ = State::kRunning;
    }
    const int64_t start_ns = options_.clock->NowNs();
    std::vector<Completion> completions;
    const bool ok = Execute(*batch, &completions);
    const int64_t execution_ns = options_.clock->NowNs() - start_ns;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (state_ == State::kRunning) state_ = State::kIdle;
    }
    // Outside our lock: the scheduler delivers the completions and takes its own lock to put
    // us back on the idle list.
    options_.listener->OnBatchDone(this, *batch, &completions, execution_ns, ok);
    batch.reset();  // frees the requests; input memory belongs to the callers
  }
  options_.engine->OnWorkerExit();
}

bool Instance::Execute(Batch& batch, std::vector<Completion>* completions_out) {
  const ModelSpec& model = *options_.model;
  const int64_t start_ns = SteadyNowNs();
  for (const auto& request : batch.requests()) request->state = RequestState::kExecuting;
  options_.stats->RecordBatchExecuted(batch.rows());

  Status status;
  BatchInputs& inputs = inputs_;
  BatchOutputs& outputs = outputs_;
  // The batch's buffers go when Execute returns, whatever happened; the slots stay for the next.
  struct DropBuffers {
    BatchInputs& inputs;
    BatchOutputs& outputs;
    ~DropBuffers() {
      for (BatchTensor& tensor : inputs) tensor.buffer.reset();
      for (BatchTensor& tensor : outputs) tensor.buffer.reset();
    }
  } drop{inputs, outputs};
  std::vector<Completion>& completions = *completions_out;
  int64_t input_done_ns = start_ns;
  int64_t infer_done_ns = start_ns;
  // Engines and the gather/scatter report failures as a Status; the catch is the last resort
  // (std::bad_alloc, a bug) so that no exception ever leaves this thread.
  try {
    status = batch.Gather(model, *options_.engine, &inputs);
    input_done_ns = SteadyNowNs();
    if (status.ok()) {
      batch.PrepareOutputs(model, &outputs);
      status = options_.engine->Execute(inputs, &outputs);
    }
    infer_done_ns = SteadyNowNs();
    if (status.ok()) {
      completions.reserve(batch.requests().size());
      status = batch.Scatter(model, outputs, &completions);
    }
    // Before the completions leave, so an answer's batch is counted when it arrives.
    if (status.ok() && options_.monitor != nullptr) options_.monitor->Record(inputs, outputs);
  } catch (const std::exception& e) {
    status = Status::Internal("model '" + model.name + "' instance " +
                              std::to_string(options_.index) + ": " + e.what());
  } catch (...) {
    status = Status::Internal("model '" + model.name + "' instance " +
                              std::to_string(options_.index) + ": unknown exception");
  }
  if (!status.ok()) {
    completions.clear();
    FailBatch(batch, status, &completions);
    return false;
  }

  const int64_t done_ns = SteadyNowNs();
  BatchRecord record;
  record.rows = batch.rows();
  record.requests = batch.requests().size();
  record.compute_input_ns = static_cast<uint64_t>(input_done_ns - start_ns);
  record.compute_infer_ns = static_cast<uint64_t>(infer_done_ns - input_done_ns);
  record.compute_output_ns = static_cast<uint64_t>(done_ns - infer_done_ns);
  if (DeviceTimes device; options_.engine->LastDeviceTimes(&device)) {
    // The host saw the copies and the model as one wait; the device's events split it.
    record.compute_input_ns += static_cast<uint64_t>(device.input_ns);
    record.compute_infer_ns = static_cast<uint64_t>(device.infer_ns);
    record.compute_output_ns += static_cast<uint64_t>(device.output_ns);
  }
  for (const auto& request : batch.requests()) {
    const uint64_t queue_ns = static_cast<uint64_t>(start_ns - request->queued_ns);
    const uint64_t request_ns = static_cast<uint64_t>(done_ns - request->submit_ns);
    record.queue_ns += queue_ns;
    record.success_ns += request_ns;
    options_.stats->ObserveRequest(request_ns, queue_ns);
    request->state = RequestState::kDone;
  }
  // Statistics before the completions leave: whoever drains one sees it counted.
  options_.stats->RecordSuccess(record);
  options_.stats->AddPending(-static_cast<int64_t>(record.requests));
  return true;
}

void Instance::FailBatch(const Batch& batch, const Status& status,
                         std::vector<Completion>* completions_out) {
  const int64_t done_ns = SteadyNowNs();
  std::vector<Completion>& completions = *completions_out;
  completions.resize(batch.requests().size());
  for (size_t i = 0; i < batch.requests().size(); ++i) {
    Request& request = *batch.requests()[i];
    completions[i].request_id = request.id;
    completions[i].status = status;
    options_.stats->RecordFailure(FailureReason::kBackend,
                                  static_cast<uint64_t>(done_ns - request.submit_ns));
    request.state = RequestState::kDone;
  }
  options_.stats->AddPending(-static_cast<int64_t>(completions.size()));
}

}  // namespace core
}  // namespace pyserver
