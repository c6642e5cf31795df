// Instance: one executing engine context with its own worker thread.
//
// The batcher hands an idle instance one batch at a time (Run). The worker gathers the inputs,
// runs the engine, scatters the outputs into per-request views, records statistics, and hands
// every request's completion to its listener (the scheduler) at once, which delivers them and
// puts the instance back on its idle list.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/batch.h"
#include "core/clock.h"
#include "core/completion.h"
#include "core/engine.h"
#include "core/model_spec.h"
#include "core/stats.h"

namespace pyserver {
namespace core {

class Instance;
class Monitor;

class InstanceListener {
 public:
  virtual ~InstanceListener() = default;
  // Called on the instance's worker thread after each batch, with no lock of the instance held
  // and the instance already idle: completions[i] answers batch.requests()[i] (successes, or the
  // batch's failure); execution_ns is the batch's gather-to-scatter time on the scheduler's
  // clock; ok says whether it succeeded.
  virtual void OnBatchDone(Instance* instance, const Batch& batch,
                           std::vector<Completion>* completions, int64_t execution_ns,
                           bool ok) = 0;
};

struct InstanceOptions {
  int index = 0;                              // for messages
  const ModelSpec* model = nullptr;           // outlives the instance
  std::shared_ptr<Engine> engine;
  const Clock* clock = nullptr;               // the scheduler's; outlives the instance
  Stats* stats = nullptr;                     // outlives the instance
  InstanceListener* listener = nullptr;       // outlives the instance
  Monitor* monitor = nullptr;                 // outlives the instance; nullptr = none
};

class Instance {
 public:
  explicit Instance(InstanceOptions options);
  ~Instance();  // Stop()
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  void Start();

  // Hands the worker a batch. Precondition: the instance is idle (the caller took it from the
  // idle list, so no other batch is assigned or running). Takes mu_ briefly.
  void Run(std::unique_ptr<Batch> batch);

  // Lets an assigned or running batch finish, then ends and joins the worker. Idempotent.
  // Must not be called on the worker thread itself (from inside an engine).
  void Stop();

 private:
  enum class State {
    kIdle,      // waiting for a batch
    kAssigned,  // batch_ holds the next batch; the worker has not taken it yet
    kRunning,   // the worker is executing a batch
    kStopped,   // the worker has exited
  };

  void WorkerLoop();
  // Runs one batch from gather to scatter and records its statistics; fills one completion
  // per request. Never throws. Returns whether the batch succeeded.
  bool Execute(Batch& batch, std::vector<Completion>* completions);
  // Fails every request of the batch with `status`.
  void FailBatch(const Batch& batch, const Status& status, std::vector<Completion>* completions);

  InstanceOptions options_;
  std::thread worker_;

  std::mutex mu_;  // guards state_, batch_ and stop_requested_; never held while executing
  std::condition_variable cv_;
  State state_ = State::kIdle;
  bool stop_requested_ = false;  // finish what is assigned, then exit
  std::unique_ptr<Batch> batch_;

  // The worker's: the batch's gathered inputs and the engine's output slots, kept between
  // batches so that their vectors and shapes are reused (Execute drops the buffers each time).
  BatchInputs inputs_;
  BatchOutputs outputs_;
};

}  // namespace core
}  // namespace pyserver
