// Clocks. Every window and deadline in the core is monotonic (steady_clock); tests swap in a
// manual clock that moves only when told, so batching decisions are deterministic.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace pyserver {
namespace core {

// steady_clock now, in ns since its (arbitrary) epoch.
inline int64_t SteadyNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Wall-clock ms since the Unix epoch: only for the last_inference statistic, never for timing.
inline int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowNs() const = 0;
  // A manual clock cannot be waited on with a timeout: whoever advances it wakes the waiters.
  virtual bool manual() const = 0;
};

class SteadyClock final : public Clock {
 public:
  int64_t NowNs() const override { return SteadyNowNs(); }
  bool manual() const override { return false; }
};

class ManualClock final : public Clock {
 public:
  int64_t NowNs() const override { return now_ns_.load(std::memory_order_acquire); }
  bool manual() const override { return true; }
  void Advance(int64_t ns) { now_ns_.fetch_add(ns, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_ns_{0};
};

}  // namespace core
}  // namespace pyserver
