#include "core/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cmath>
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

Status CheckPolicy(const QueuePolicy& policy, const std::string& where) {
  if (policy.default_timeout_us < 0) {
    return Status::InvalidArgument(where + ".default_timeout_microseconds must be >= 0");
  }
  if (policy.max_queue_size < 0) {
    return Status::InvalidArgument(where + ".max_queue_size must be >= 0");
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
  constexpr int64_t kMaxDelayUs = RequestQueue::kMaxTimeoutUs;
  if (options.max_queue_delay_us < 0 || options.max_queue_delay_us > kMaxDelayUs) {
    return Status::InvalidArgument(prefix + "max_queue_delay_us must be from 0 to " +
                                   std::to_string(kMaxDelayUs));
  }
  if (options.latency_target_us < 0 || options.latency_target_us > kMaxDelayUs) {
    return Status::InvalidArgument(prefix + "latency_target_us must be from 0 to " +
                                   std::to_string(kMaxDelayUs));
  }
  const int64_t levels = options.priority_levels;
  if (levels < 0 || levels > Scheduler::kMaxPriorityLevels) {
    return Status::InvalidArgument(prefix + "priority_levels must be from 0 to " +
                                   std::to_string(Scheduler::kMaxPriorityLevels));
  }
  if (levels == 0 ? options.default_priority_level != 0
                  : (options.default_priority_level < 1 || options.default_priority_level > levels)) {
    return Status::InvalidArgument(
        prefix + "default_priority_level " + std::to_string(options.default_priority_level) +
        (levels == 0 ? " needs priority_levels"
                     : " is outside 1.." + std::to_string(levels) + " (priority_levels)"));
  }
  Status status = CheckPolicy(options.default_queue_policy, prefix + "default_queue_policy");
  if (!status.ok()) return status;
  for (const auto& entry : options.priority_queue_policy) {
    if (entry.first < 1 || entry.first > levels) {
      return Status::InvalidArgument(prefix + "priority_queue_policy level " +
                                     std::to_string(entry.first) + " is outside 1.." +
                                     std::to_string(levels) + " (priority_levels)");
    }
    status = CheckPolicy(entry.second, prefix + "priority_queue_policy[" +
                                           std::to_string(entry.first) + "]");
    if (!status.ok()) return status;
  }
  status = CheckSpecs(model.inputs, "input");
  if (!status.ok()) return status;
  status = CheckSpecs(model.outputs, "output");
  if (!status.ok()) return status;
  return Monitor::Check(options.monitor, model);
}

// One policy per level: the level's own, else the default.
std::vector<QueuePolicy> LevelPolicies(const SchedulerOptions& options) {
  const int64_t levels = std::max<int64_t>(options.priority_levels, 1);
  std::vector<QueuePolicy> policies(static_cast<size_t>(levels), options.default_queue_policy);
  for (const auto& entry : options.priority_queue_policy) {
    policies[static_cast<size_t>(entry.first - 1)] = entry.second;
  }
  return policies;
}

// True when shapes x and y have the same dims beyond the batch dimension.
bool SameNonBatchDims(const Shape& x, const Shape& y) {
  return std::equal(x.begin() + 1, x.end(), y.begin() + 1, y.end());
}

// ... for every input. Only for batching models, whose validated shapes all have the batch
// dimension first.
bool SameNonBatchDims(const Request& a, const Request& b) {
  for (size_t i = 0; i < a.inputs.size(); ++i) {
    if (!SameNonBatchDims(a.inputs[i].shape, b.inputs[i].shape)) return false;
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
      engines_(std::move(engines)),
      queue_(options_.model.name, LevelPolicies(options_),
             options_.priority_levels > 0
                 ? static_cast<size_t>(options_.default_priority_level - 1)
                 : 0,
             options_.priority_levels > 0),
      estimator_(std::max<int64_t>(options_.model.max_batch_size, 1)) {
  if (options_.manual_clock) {
    clock_.reset(new ManualClock());
  } else {
    clock_.reset(new SteadyClock());
  }
  if (options_.preserve_ordering) sequencer_.reset(new Sequencer(completions_));
  Monitor::Create(options_.monitor, options_.model, clock_.get(), &monitor_);  // checked

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
    instance_options.clock = clock_.get();
    instance_options.stats = &stats_;
    instance_options.listener = this;
    instance_options.monitor = monitor_.get();
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
    RejectRequest(*request, std::move(status), FailureReason::kOther);
    return;
  }
  bool wake = false;
  FailureReason reason = FailureReason::kOther;  // if it is not queued
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ != State::kRunning) {
      status = Status::Unavailable("model '" + options_.model.name + "' is shutting down");
    } else {
      // Read the clocks under the lock so that queue order is enqueue-time order.
      request->queued_ns = SteadyNowNs();
      request->enqueue_ns = clock_->NowNs();
      request->state = RequestState::kQueued;
      Request* queued = request.get();
      status = queue_.Push(&request, request->enqueue_ns);
      if (status.code() == StatusCode::kResourceExhausted) reason = FailureReason::kRejected;
      if (status.ok()) {
        stats_.AddPending(1);
        if (options_.latency_target_us > 0) {
          estimator_.RecordArrival(queued->enqueue_ns, queued->rows);
        }
        if (batcher_waiting_) {
          if (queued->timeout_ns != 0 &&
              (batcher_wakes_at_ns_ == 0 || queued->timeout_ns < batcher_wakes_at_ns_)) {
            wake = true;  // its timeout runs out before the batcher would look again
          } else if (BatcherCanAct()) {
            if (batcher_awaits_deadline_) {
              // The batcher sleeps until a group's deadline. This request changes that only
              // if it makes a batch ready; waking it otherwise costs a context switch per
              // request for nothing.
              wake = CompletesWaitingGroup(*queued);
            } else {
              wake = true;
            }
          }
        }
      }
    }
  }
  if (!status.ok()) {  // not queued: full, a bad priority, or the scheduler is stopping
    RejectRequest(*request, std::move(status), reason);
    return;
  }
  // Wake the batcher after unlocking: this request may start, fill or complete a batch.
  if (wake) cv_.notify_one();
}

void Scheduler::RejectRequest(const Request& request, Status status, FailureReason reason) {
  stats_.RecordFailure(reason, static_cast<uint64_t>(SteadyNowNs() - request.submit_ns));
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

void Scheduler::FailQueued(std::vector<std::unique_ptr<Request>>* requests, const Status& status,
                           FailureReason reason) {
  if (requests->empty()) return;
  const int64_t now_ns = SteadyNowNs();
  std::vector<Completion> completions(requests->size());
  std::vector<const Request*> answered(requests->size());
  for (size_t i = 0; i < requests->size(); ++i) {
    Request& request = *(*requests)[i];
    completions[i].request_id = request.id;
    completions[i].status = status;
    stats_.RecordFailure(reason, static_cast<uint64_t>(now_ns - request.submit_ns));
    request.state = RequestState::kDone;
    answered[i] = &request;
  }
  stats_.AddPending(-static_cast<int64_t>(requests->size()));
  Deliver(answered, &completions);
  requests->clear();
}

void Scheduler::Deliver(const std::vector<const Request*>& requests,
                        std::vector<Completion>* completions) {
  if (sequencer_ == nullptr) {
    completions_->Push(completions);
    return;
  }
  std::vector<uint64_t> sequences(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) sequences[i] = requests[i]->sequence;
  sequencer_->Push(sequences, completions);
}

bool Scheduler::Cancel(uint64_t request_id) {
  std::vector<std::unique_ptr<Request>> cancelled(1);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancelled[0] = queue_.Remove(request_id);
    wake = cancelled[0] != nullptr && batcher_waiting_;
  }
  if (cancelled[0] == nullptr) return false;
  // Wake the batcher after unlocking: without this request a waiting group may be ready now
  // (a preferred size), or its deadline may have moved. Cancellations are rare.
  if (wake) cv_.notify_one();
  FailQueued(&cancelled,
             Status::Cancelled("model '" + options_.model.name +
                               "': the request was cancelled before it ran (the client went away)"),
             FailureReason::kCanceled);
  return true;
}

bool Scheduler::QueueFull() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.Full();
}

size_t Scheduler::Queued() {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

double Scheduler::EstimatedExecutionUs(int64_t rows) {
  std::lock_guard<std::mutex> lock(mu_);
  return estimator_.ExecutionNs(rows) / 1000.0;
}

int64_t Scheduler::LatencyBatchLimit() {
  std::lock_guard<std::mutex> lock(mu_);
  return estimator_.LargestWithin(static_cast<double>(options_.latency_target_us) * 1000.0 / 2);
}

void Scheduler::Stop() {
  std::lock_guard<std::mutex> stop_lock(stop_mu_);
  std::vector<std::unique_ptr<Request>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (state_ == State::kStopped) return;
    state_ = State::kStopping;
    queue_.Clear(&abandoned);
  }
  // Wake the batcher after unlocking: it must see kStopping and exit.
  cv_.notify_all();
  FailQueued(&abandoned,
             Status::Unavailable("model '" + options_.model.name + "' is shutting down"),
             FailureReason::kOther);

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
  if (microseconds < 0 || microseconds > RequestQueue::kMaxTimeoutUs) {
    return Status::InvalidArgument("the clock moves forward, by at most " +
                                   std::to_string(RequestQueue::kMaxTimeoutUs) + " us at a time");
  }
  bool wake;
  {
    // Under mu_ so that the batcher, which reads the clock under mu_, cannot miss the move.
    std::lock_guard<std::mutex> lock(mu_);
    static_cast<ManualClock*>(clock_.get())->Advance(microseconds * 1000);
    wake = batcher_waiting_;
  }
  // Wake the batcher after unlocking: a deadline or a timeout may have passed.
  if (wake) cv_.notify_one();
  return Status::Ok();
}

void Scheduler::OnBatchDone(Instance* instance, const Batch& batch,
                            std::vector<Completion>* completions, int64_t execution_ns,
                            bool ok) {
  std::vector<const Request*> requests(batch.requests().size());
  for (size_t i = 0; i < requests.size(); ++i) requests[i] = batch.requests()[i].get();
  Deliver(requests, completions);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ok && options_.latency_target_us > 0) {
      estimator_.RecordExecution(batch.rows(), execution_ns);
    }
    idle_.push_back(instance);
    wake = batcher_waiting_ && BatcherCanAct();
  }
  // Wake the batcher after unlocking: a pending batch may have been waiting for an instance.
  if (wake) cv_.notify_one();
}

bool Scheduler::CompletesWaitingGroup(const Request& request) {
  for (GroupSummary& group : waiting_groups_) {
    size_t i = 0;
    while (i < group.dims.size() && SameNonBatchDims(group.dims[i], request.inputs[i].shape)) ++i;
    if (i < group.dims.size()) continue;  // another shape
    if (group.rows + request.rows > waiting_limit_) return true;  // full: it does not fit
    group.rows += request.rows;
    return group.rows >= waiting_limit_ || preferred_[static_cast<size_t>(group.rows)];
  }
  if (request.rows >= waiting_limit_ || preferred_[static_cast<size_t>(request.rows)]) return true;
  if (waiting_groups_.size() < kMaxShapeGroups) {
    GroupSummary fresh;
    for (const InputData& input : request.inputs) fresh.dims.push_back(input.shape);
    fresh.rows = request.rows;
    waiting_groups_.push_back(std::move(fresh));
  }
  return false;
}

bool Scheduler::BatcherCanAct() const {
  return !queue_.empty() && !idle_.empty() && queue_.size() >= hold_;
}

void Scheduler::BatcherLoop() {
  using TimePoint = std::chrono::steady_clock::time_point;
  std::unique_lock<std::mutex> lock(mu_);
  Plan plan;
  std::vector<std::unique_ptr<Request>> expired;
  while (state_ == State::kRunning) {
    const int64_t now_ns = clock_->NowNs();
    queue_.Expire(now_ns, &expired);
    if (!expired.empty()) {
      lock.unlock();
      FailQueued(&expired,
                 Status::DeadlineExceeded("model '" + options_.model.name +
                                          "': the request timed out in the queue (its queue "
                                          "timeout ran out before it could run)"),
                 FailureReason::kRejected);
      lock.lock();
      continue;
    }
    int64_t wake_ns = queue_.NextTimeoutNs();  // 0: no timeout pending
    if (BatcherCanAct()) {
      PlanBatch(now_ns, &plan);
      if (plan.dispatch) {
        Instance* instance = idle_.back();
        idle_.pop_back();
        std::unique_ptr<Batch> batch(new Batch(queue_.Take(plan.members)));
        lock.unlock();
        // Outside mu_: Run takes the instance's lock and wakes its worker, which then never
        // contends with submitters for mu_ on its way to executing.
        instance->Run(std::move(batch));
        lock.lock();
        continue;
      }
      if (plan.deadline_ns != 0 && (wake_ns == 0 || plan.deadline_ns < wake_ns)) {
        wake_ns = plan.deadline_ns;
      }
      // What Submit needs to tell whether a new request makes one of these groups ready.
      waiting_groups_.resize(planned_groups_);
      for (size_t g = 0; g < planned_groups_; ++g) {
        GroupSummary& summary = waiting_groups_[g];
        summary.dims.clear();
        for (const InputData& input : groups_[g].first->inputs) summary.dims.push_back(input.shape);
        summary.rows = groups_[g].rows;
      }
      waiting_limit_ = planned_limit_;
      batcher_awaits_deadline_ = true;
    }
    // Wait for a deadline or a timeout, or for a change (a request, a free instance, the hold
    // released): each of those notifies. A manual clock is waited on untimed: AdvanceClock
    // notifies.
    batcher_waiting_ = true;
    batcher_wakes_at_ns_ = wake_ns;
    if (wake_ns == 0 || clock_->manual()) {
      cv_.wait(lock);
    } else {
      cv_.wait_until(lock, TimePoint(std::chrono::nanoseconds(wake_ns)));
    }
    batcher_wakes_at_ns_ = 0;
    batcher_awaits_deadline_ = false;
    batcher_waiting_ = false;
  }
}

bool Scheduler::GroupReady(const Group& group, int64_t now_ns, int64_t* deadline_ns) const {
  const int64_t target_us = options_.latency_target_us;
  if (target_us == 0) {
    *deadline_ns = group.oldest_enqueue_ns + options_.max_queue_delay_us * 1000;
    return now_ns >= *deadline_ns;
  }
  // The latency target: wait at most half of it, and only while more rows are expected.
  const int64_t half_ns = target_us * 1000 / 2;
  const int64_t latest_ns = group.oldest_enqueue_ns + half_ns;
  const double rate = estimator_.RowsPerNs();  // rows per ns
  // Ready once fewer than one row is expected before latest_ns: from latest - 1/rate on.
  *deadline_ns = latest_ns;
  if (rate > 0 && std::isfinite(rate)) {
    *deadline_ns -= std::min(half_ns, static_cast<int64_t>(std::ceil(1.0 / rate)));
  }
  const int64_t left_ns = latest_ns - now_ns;
  if (left_ns <= 0) return true;
  return rate * static_cast<double>(left_ns) < 1.0;
}

void Scheduler::PlanBatch(int64_t now_ns, Plan* plan) {
  plan->dispatch = false;
  plan->deadline_ns = 0;
  plan->members.clear();

  Slot head;
  while (queue_.sub_queue(head.queue).empty()) ++head.queue;  // the queue is not empty
  const int64_t max_batch_size = options_.model.max_batch_size;
  if (max_batch_size == 0 || !options_.dynamic_batching) {
    // No batching (or no dynamic batching): every batch is one request, at once.
    plan->members.push_back(head);
    plan->dispatch = true;
    return;
  }

  int64_t limit = max_batch_size;
  if (options_.latency_target_us > 0) {
    const Request& first = *queue_.sub_queue(head.queue).front();
    const int64_t target_ns = options_.latency_target_us * 1000;
    if (now_ns - first.enqueue_ns < target_ns) {
      limit = estimator_.LargestWithin(static_cast<double>(target_ns) / 2);
    }
  }

  // Form the groups: each request joins the group of its shape while its rows fit.
  size_t groups = 0;
  size_t scanned = 0;
  bool head_full = false;
  for (size_t q = head.queue; q < queue_.sub_queues() && !head_full; ++q) {
    const auto& sub = queue_.sub_queue(q);
    for (size_t i = 0; i < sub.size() && !head_full && scanned < kPlanWindow; ++i, ++scanned) {
      const Request& request = *sub[i];
      size_t g = 0;
      while (g < groups && !SameNonBatchDims(*groups_[g].first, request)) ++g;
      if (g == groups) {
        if (groups == kMaxShapeGroups) continue;  // a later decision will see it
        if (groups_.size() == groups) groups_.emplace_back();
        Group& fresh = groups_[groups++];
        fresh.first = &request;
        fresh.rows = 0;
        fresh.oldest_enqueue_ns = request.enqueue_ns;
        fresh.full = false;
        fresh.members.clear();
      }
      Group& group = groups_[g];
      if (group.full) continue;  // stays queued for a later batch
      if (group.rows > 0 && group.rows + request.rows > limit) {
        group.full = true;  // its next request does not fit
      } else {
        group.rows += request.rows;
        group.members.push_back(Slot{q, i});
        group.oldest_enqueue_ns = std::min(group.oldest_enqueue_ns, request.enqueue_ns);
        group.full = group.rows >= limit;
      }
      head_full = groups_[0].full;  // the head's group goes first: nothing else can matter
    }
  }
  planned_groups_ = groups;
  planned_limit_ = limit;
  if (!head_full && scanned >= kPlanWindow && queue_.size() > scanned) {
    // Requests beyond the window were not read: every group may have more queued than it
    // holds, so each counts as full (a queue this long is no time to wait for a batch).
    for (size_t g = 0; g < groups; ++g) groups_[g].full = true;
  }

  // The first ready group goes.
  for (size_t g = 0; g < groups; ++g) {
    Group& group = groups_[g];
    if (!group.full) {
      // The longest prefix whose rows are a preferred batch size.
      size_t preferred_prefix = 0;
      int64_t prefix_rows = 0;
      for (size_t k = 0; k < group.members.size(); ++k) {
        const Slot& slot = group.members[k];
        prefix_rows += queue_.sub_queue(slot.queue)[slot.index]->rows;
        if (preferred_[static_cast<size_t>(prefix_rows)]) preferred_prefix = k + 1;
      }
      if (preferred_prefix > 0) {
        group.members.resize(preferred_prefix);
      } else {
        int64_t deadline_ns = 0;
        if (!GroupReady(group, now_ns, &deadline_ns)) {
          if (plan->deadline_ns == 0 || deadline_ns < plan->deadline_ns) {
            plan->deadline_ns = deadline_ns;
          }
          continue;
        }
      }
    }
    plan->members.swap(group.members);
    plan->dispatch = true;
    return;
  }
}

}  // namespace core
}  // namespace pyserver
