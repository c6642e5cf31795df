// PinnedPool: page-locked host memory for the copies to and from GPUs.
//
// Copies from pageable memory go through the driver's own staging buffer (an extra copy, and
// no overlap with compute); from page-locked memory the GPU's copy engine reads host memory
// directly. Page-locking is slow (a system call and page-table work), so the pool locks one
// region once, when first used, and hands out pieces of it: batch inputs are gathered into a
// piece, and outputs are copied back into pieces that the requests' views then share. When the
// pool has no room (or no region could be locked) a piece is ordinary heap memory instead:
// slower copies, never a failure. Both are counted, in total and per account (an instance).
//
// The memory comes from a HostMemorySource: the CUDA driver's cuMemHostAlloc, or plain heap
// memory (HeapSource), the stand-in on machines without a GPU and in tests.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "core/cuda_driver.h"
#include "core/status.h"
#include "core/tensor.h"

namespace pyserver {
namespace core {

class HostMemorySource {
 public:
  virtual ~HostMemorySource() = default;
  virtual Status Allocate(size_t bytes, void** ptr) = 0;
  virtual void Free(void* ptr) = 0;
};

// Page-locked memory from the CUDA driver, allocated in the primary context current on the
// calling thread (the pool reserves its region from an instance's worker thread). The source
// holds a reference on that context for as long as the memory lives: a primary context whose
// last reference goes is reset, and that would free the memory under the pool. One source
// serves one allocation (the pool's region).
class CudaPinnedSource final : public HostMemorySource {
 public:
  explicit CudaPinnedSource(std::shared_ptr<CudaDriver> driver) : driver_(std::move(driver)) {}
  Status Allocate(size_t bytes, void** ptr) override;
  // On whatever thread frees the pool's last piece: in the allocating context, made current for
  // the call and the thread's own restored after.
  void Free(void* ptr) override;

 private:
  std::shared_ptr<CudaDriver> driver_;
  int gpu_ = -1;  // whose primary context the memory was allocated in (retained)
  CUcontext context_ = nullptr;
};

// Ordinary heap memory standing in for pinned memory.
class HeapSource final : public HostMemorySource {
 public:
  Status Allocate(size_t bytes, void** ptr) override;
  void Free(void* ptr) override;
};

// Bytes currently held by one user of the pool (an instance), for /stats memory_usage.
struct MemoryAccount {
  std::atomic<int64_t> pinned{0};
  std::atomic<int64_t> fallback{0};
};

struct PinnedPoolStats {
  uint64_t pool_bytes = 0;  // the region's size (0 until reserved, or when none could be)
  uint64_t pinned_in_use = 0;
  uint64_t fallback_in_use = 0;
  uint64_t pinned_allocations = 0;    // since start
  uint64_t fallback_allocations = 0;  // since start
};

struct PinnedPoolOptions {
  size_t pool_bytes = 256u << 20;  // Triton's --pinned-memory-pool-byte-size default
  std::shared_ptr<HostMemorySource> source;
};

class PinnedPool : public std::enable_shared_from_this<PinnedPool> {
 public:
  // Pieces are aligned (and sized in multiples of) this: enough for any copy engine and SIMD.
  static constexpr size_t kAlignment = 256;

  static std::shared_ptr<PinnedPool> Create(PinnedPoolOptions options);
  ~PinnedPool();  // after every piece is back (pieces hold the pool)

  // A piece of `bytes`: pinned when the pool has room, else heap memory. nullptr only when the
  // heap is exhausted too. `account` (may be null) is charged until the piece is freed.
  // Takes mu_ briefly; the first call reserves the region.
  std::shared_ptr<MutableBuffer> Allocate(size_t bytes, std::shared_ptr<MemoryAccount> account);

  PinnedPoolStats stats() const;
  // Why the region could not be reserved ("" when it was, or has not been tried).
  std::string reserve_error() const;

 private:
  class Piece;
  explicit PinnedPool(PinnedPoolOptions options);
  // mu_ must be held: reserves the region on first use.
  void ReserveLocked();
  // mu_ must NOT be held: gives a piece back and merges it with free neighbours.
  void Release(size_t offset, size_t bytes);

  const PinnedPoolOptions options_;
  mutable std::mutex mu_;  // guards everything below
  bool reserved_ = false;  // the region was tried (successfully or not)
  uint8_t* region_ = nullptr;
  std::string reserve_error_;
  std::map<size_t, size_t> free_;  // offset -> size; neighbours never both free (merged)
  PinnedPoolStats stats_;
};

}  // namespace core
}  // namespace pyserver
