#include "core/scheduler.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <utility>

#include "core/validate.h"

namespace pyserver {
namespace core {
namespace {

Status CheckSpecs(const std::vector<TensorSpec>& specs, const char* kind) {
  for (const TensorSpec& spec : specs) {
    if (!IsValidDataType(static_cast<int>(spec.dtype))) {
      return Status::InvalidArgument(std::string(kind) + " '" + spec.name +
                                     "': unknown datatype code " +
                                     std::to_string(static_cast<int>(spec.dtype)));
    }
    for (int64_t dim : spec.dims) {
      if (dim < -1) {
        return Status::InvalidArgument(std::string(kind) + " '" + spec.name + "': dims " +
                                       ShapeToString(spec.dims) +
                                       " may hold sizes >= 0 or -1 (any) only");
      }
    }
  }
  return Status::Ok();
}

Status CheckOptions(const SchedulerOptions& options) {
  const ModelSpec& model = options.model;
  const std::string prefix = "model '" + model.name + "': ";
  if (model.max_batch_size < 0 || model.max_batch_size > Scheduler::kMaxBatchSizeLimit) {
    return Status::InvalidArgument(prefix + "max_batch_size " +
                                   std::to_string(model.max_batch_size) + " is outside 0.." +
                                   std::to_string(Scheduler::kMaxBatchSizeLimit));
  }
  for (int64_t size : options.preferred_batch_sizes) {
    if (size < 1 || size > model.max_batch_size) {
      return Status::InvalidArgument(prefix + "preferred batch size " + std::to_string(size) +
                                     " is outside 1.." + std::to_string(model.max_batch_size) +
                                     " (max_batch_size)");
    }
  }
  // Bounded so that deadlines (enqueue_ns + delay * 1000) cannot overflow int64.
  constexpr int64_t kMaxQueueDelayUs = int64_t{1} << 40;  // about 12.7 days
  if (options.max_queue_delay_us < 0 || options.max_queue_delay_us > kMaxQueueDelayUs) {
    return Status::InvalidArgument(prefix + "max_queue_delay_us must be from 0 to " +
                                   std::to_string(kMaxQueueDelayUs));
  }
  Status status = CheckSpecs(model.inputs, "input");
  if (!status.ok()) return status;
  return CheckSpecs(model.outputs, "output");
}

// True when a and b have the same dims beyond the batch dimension, for every input. Only for
// batching models, whose validated shapes all have the batch dimension first.
bool SameNonBatchDims(const Request& a, const Request& b) {
  for (size_t i = 0; i < a.inputs.size(); ++i) {
    const Shape& x = a.inputs[i].shape;
    const Shape& y = b.inputs[i].shape;
    if (!std::equal(x.begin() + 1, x.end(), y.begin() + 1, y.end())) return false;
  }
  return true;
}

}  // namespace

Status Scheduler::Create(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
                         std::shared_ptr<CompletionQueue> completions,
                         std::unique_ptr<Scheduler>* scheduler) {
  Status status = CheckOptions(options);
  if (!status.ok()) return status;
  if (engines.empty()) {
    return Status::InvalidArgument("model '" + options.model.name +
                                   "': a scheduler needs at least one engine (instance)");
  }
  for (const auto& engine : engines) {
    if (engine == nullptr) return Status::InvalidArgument("engine must not be None");
  }
  if (completions == nullptr) return Status::InvalidArgument("completion queue is missing");

  std::unique_ptr<Scheduler> created(
      new Scheduler(std::move(options), std::move(engines), std::move(completions)));
  try {
    for (auto& instance : created->instances_) instance->Start();
    created->batcher_ = std::thread(&Scheduler::BatcherLoop, created.get());
  } catch (const std::exception& e) {
    created->Stop();  // joins whatever did start
    return Status::Internal(std::string("could not start the scheduler's threads: ") + e.what());
  }
  *scheduler = std::move(created);
  return Status::Ok();
}

Scheduler::Scheduler(SchedulerOptions options, std::vector<std::shared_ptr<Engine>> engines,
                     std::shared_ptr<CompletionQueue> completions)
    : options_(std::move(options)),
      completions_(std::move(completions)),
      stats_(options_.model.max_batch_size),
      engines_(std::move(engines)) {
  if (options_.manual_clock) {
    clock_.reset(new ManualClock());
  } else {
    clock_.reset(new SteadyClock());
  }

  const int64_t max_batch_size = options_.model.max_batch_size;
  preferred_.assign(static_cast<size_t>(max_batch_size) + 1, false);
  for (int64_t size : options_.preferred_batch_sizes) preferred_[static_cast<size_t>(size)] = true;
  if (options_.preferred_batch_sizes.empty()) {
    preferred_[static_cast<size_t>(max_batch_size)] = true;  // max_batch_size is the one size
  }

  for (size_t i = 0; i < engines_.size(); ++i) {
    InstanceOptions instance_options;
    instance_options.index = static_cast<int>(i);
    instance_options.model = &options_.model;
    instance_options.engine = engines_[i];
    instance_options.completions = completions_;
    instance_options.stats = &stats_;
    instance_options.listener = this;
    instances_.emplace_back(new Instance(std::move(instance_options)));
  }
  // Every instance starts idle. The batcher takes from the back: the most recently idle one,
  // whose memory is warmest.
  for (auto it = instances_.rbegin(); it != instances_.rend(); ++it) idle_.push_back(it->get());
}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Submit(std::unique_ptr<Request> request) {
  request->submit_ns = SteadyNowNs();
  Status status = ValidateRequest(options_.model, request.get());
  if (!status.ok()) {
    RejectRequest(*request, std::move(status));
    return;
  }
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kRunning) {
      // Read the clocks under the lock so that queue order is enqueue-time order.
      request->queued_ns = SteadyNowNs();
      request->enqueue_ns = clock_->NowNs();
      request->state = RequestState::kQueued;
      queue_.push_back(std::move(request));
      stats_.AddPending(1);
      if (batcher_waiting_ && BatcherCanAct()) {
        if (batcher_awaits_deadline_) {
          // The batcher sleeps until the oldest request's queue delay runs out. This request
          // changes that only if it completes a full or preferred batch; waking it otherwise
          // costs a context switch per request for nothing.
          Plan plan;
          PlanBatch(clock_->NowNs(), &plan);
          wake = plan.dispatch;
        } else {
          wake = true;
        }
      }
    }
  }
  if (request != nullptr) {  // not queued: the scheduler is stopping
    RejectRequest(*request,
                  Status::Unavailable("model '" + options_.model.name + "' is shutting down"));
    return;
  }
  // Wake the batcher after unlocking: this request may start, fill or complete a batch.
  if (wake) cv_.notify_one();
}

void Scheduler::RejectRequest(const Request& request, Status status) {
  stats_.RecordFailure(FailureReason::kOther,
                       static_cast<uint64_t>(SteadyNowNs() - request.submit_ns));
  Completion completion;
  completion.request_id = request.id;
  completion.status = std::move(status);
  completions_->Push(std::move(completion));
}

void Scheduler::Reject(uint64_t request_id, Status status) {
  stats_.RecordFailure(FailureReason::kOther, 0);
  Completion completion;
  completion.request_id = request_id;
  completion.status = std::move(status);
  completions_->Push(std::move(completion));
}

void Scheduler::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  std::deque<std::unique_ptr<Request>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kStopped) return;
    state_ = State::kStopping;
    abandoned.swap(queue_);
  }
  // Wake the batcher after unlocking: it must see kStopping and exit.
  cv_.notify_all();

  if (!abandoned.empty()) {
    const Status status =
        Status::Unavailable("model '" + options_.model.name + "' is shutting down");
    const int64_t now_ns = SteadyNowNs();
    std::vector<Completion> completions(abandoned.size());
    for (size_t i = 0; i < abandoned.size(); ++i) {
      completions[i].request_id = abandoned[i]->id;
      completions[i].status = status;
      stats_.RecordFailure(FailureReason::kOther,
                           static_cast<uint64_t>(now_ns - abandoned[i]->submit_ns));
      abandoned[i]->state = RequestState::kDone;
    }
    stats_.AddPending(-static_cast<int64_t>(completions.size()));
    completions_->Push(&completions);
  }

  // The batcher first: once it has joined no batch can be assigned, so each instance's Stop()
  // below finishes at most the batch it already has.
  if (batcher_.joinable()) batcher_.join();
  for (auto& instance : instances_) instance->Stop();

  std::lock_guard<std::mutex> lock(mu_);
  state_ = State::kStopped;
}

void Scheduler::Hold(size_t queued) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    hold_ = queued;
    wake = batcher_waiting_ && BatcherCanAct();
  }
  // Wake the batcher after unlocking: releasing the hold may let it form a batch.
  if (wake) cv_.notify_one();
}

Status Scheduler::AdvanceClock(int64_t microseconds) {
  if (!clock_->manual()) {
    return Status::InvalidArgument("advance_clock needs SchedulerOptions.manual_clock = True");
  }
  if (microseconds < 0) return Status::InvalidArgument("the clock only moves forward");
  bool wake;
  {
    // Under mu_ so that the batcher, which reads the clock under mu_, cannot miss the move.
    std::lock_guard<std::mutex> lock(mu_);
    static_cast<ManualClock*>(clock_.get())->Advance(microseconds * 1000);
    wake = batcher_waiting_;
  }
  // Wake the batcher after unlocking: the oldest request's deadline may have passed.
  if (wake) cv_.notify_one();
  return Status::Ok();
}

void Scheduler::OnInstanceIdle(Instance* instance) {
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    idle_.push_back(instance);
    wake = batcher_waiting_ && BatcherCanAct();
  }
  // Wake the batcher after unlocking: a pending batch may have been waiting for an instance.
  if (wake) cv_.notify_one();
}

bool Scheduler::BatcherCanAct() const {
  return !queue_.empty() && !idle_.empty() && queue_.size() >= hold_;
}

void Scheduler::BatcherLoop() {
  using TimePoint = std::chrono::steady_clock::time_point;
  std::unique_lock<std::mutex> lock(mu_);
  Plan plan;
  while (state_ == State::kRunning) {
    if (!BatcherCanAct()) {
      // Nothing to do until a request arrives, an instance frees or the hold is released:
      // each of those notifies.
      batcher_waiting_ = true;
      cv_.wait(lock);
      batcher_waiting_ = false;
      continue;
    }
    PlanBatch(clock_->NowNs(), &plan);
    if (!plan.dispatch) {
      // Wait for the oldest request's deadline, or for a change (a new request may fill the
      // batch). A manual clock is waited on untimed: AdvanceClock notifies.
      batcher_waiting_ = true;
      batcher_awaits_deadline_ = true;
      if (clock_->manual()) {
        cv_.wait(lock);
      } else {
        cv_.wait_until(lock, TimePoint(std::chrono::nanoseconds(plan.deadline_ns)));
      }
      batcher_awaits_deadline_ = false;
      batcher_waiting_ = false;
      continue;
    }
    Instance* instance = idle_.back();
    idle_.pop_back();
    std::unique_ptr<Batch> batch = TakeBatch(plan);
    lock.unlock();
    // Outside mu_: Run takes the instance's lock and wakes its worker, which then never
    // contends with submitters for mu_ on its way to executing.
    instance->Run(std::move(batch));
    lock.lock();
  }
}

void Scheduler::PlanBatch(int64_t now_ns, Plan* plan) const {
  plan->dispatch = false;
  plan->members.clear();
  plan->members.push_back(0);
  const Request& oldest = *queue_.front();
  const int64_t max_batch_size = options_.model.max_batch_size;
  if (max_batch_size == 0 || !options_.dynamic_batching) {
    // No batching (or no dynamic batching): every batch is one request, at once.
    plan->dispatch = true;
    return;
  }

  // The candidate: the oldest request, then compatible requests in queue order while they fit.
  int64_t rows = oldest.rows;
  bool full = rows >= max_batch_size;
  for (size_t i = 1; i < queue_.size() && !full; ++i) {
    const Request& request = *queue_[i];
    if (!SameNonBatchDims(oldest, request)) continue;  // stays queued for a later batch
    if (rows + request.rows > max_batch_size) {
      full = true;  // the next compatible request does not fit
      break;
    }
    rows += request.rows;
    plan->members.push_back(i);
    full = rows == max_batch_size;
  }
  if (full) {
    plan->dispatch = true;
    return;
  }

  // The longest prefix whose rows are a preferred batch size.
  size_t preferred_prefix = 0;
  int64_t prefix_rows = 0;
  for (size_t k = 0; k < plan->members.size(); ++k) {
    prefix_rows += queue_[plan->members[k]]->rows;
    if (preferred_[static_cast<size_t>(prefix_rows)]) preferred_prefix = k + 1;
  }
  if (preferred_prefix > 0) {
    plan->members.resize(preferred_prefix);
    plan->dispatch = true;
    return;
  }

  // The queue delay: the whole candidate goes once the oldest request has waited long enough.
  const int64_t deadline_ns = oldest.enqueue_ns + options_.max_queue_delay_us * 1000;
  if (now_ns >= deadline_ns) {
    plan->dispatch = true;
    return;
  }
  plan->deadline_ns = deadline_ns;
}

std::unique_ptr<Batch> Scheduler::TakeBatch(const Plan& plan) {
  std::vector<std::unique_ptr<Request>> requests;
  requests.reserve(plan.members.size());
  for (size_t index : plan.members) requests.push_back(std::move(queue_[index]));
  // Close the gaps the members left, keeping the skipped requests in order. Usually the members
  // are a prefix of the queue and this erases from the front.
  const auto end = queue_.begin() + static_cast<std::ptrdiff_t>(plan.members.back() + 1);
  queue_.erase(std::remove(queue_.begin(), end, nullptr), end);
  return std::unique_ptr<Batch>(new Batch(std::move(requests)));
}

}  // namespace core
}  // namespace pyserver
