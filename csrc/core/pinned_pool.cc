#include "core/pinned_pool.h"

#include <cstdint>
#include <iterator>
#include <new>
#include <utility>

namespace pyserver {
namespace core {
namespace {

// bytes rounded up to the alignment; 0 when that would overflow (Allocate refuses it).
size_t RoundUp(size_t bytes) {
  const size_t a = PinnedPool::kAlignment;
  if (bytes > SIZE_MAX - a) return 0;
  return bytes == 0 ? a : (bytes + a - 1) / a * a;
}

}  // namespace

Status HeapSource::Allocate(size_t bytes, void** ptr) {
  *ptr = ::operator new(bytes, std::align_val_t(PinnedPool::kAlignment), std::nothrow);
  if (*ptr == nullptr) return Status::Internal("out of host memory for " + std::to_string(bytes));
  return Status::Ok();
}

Status CudaPinnedSource::Allocate(size_t bytes, void** ptr) {
  if (context_ != nullptr) return Status::Internal("the pinned source serves one allocation");
  int gpu = 0;
  Status status = driver_->CurrentDevice(&gpu);
  if (status.ok()) status = driver_->RetainPrimaryContext(gpu, &context_);
  if (!status.ok()) return status;
  gpu_ = gpu;
  status = driver_->MemHostAlloc(ptr, bytes);
  if (!status.ok()) {
    driver_->ReleasePrimaryContext(gpu_);
    context_ = nullptr;
  }
  return status;
}

void CudaPinnedSource::Free(void* ptr) {
  CUcontext previous = nullptr;
  driver_->GetCurrent(&previous);
  const bool switch_context = previous != context_;
  // Failures leave nothing to do: the memory goes with the process.
  if (!switch_context || driver_->SetCurrent(context_).ok()) {
    driver_->MemFreeHost(ptr);
    if (switch_context) driver_->SetCurrent(previous);
  }
  driver_->ReleasePrimaryContext(gpu_);
  context_ = nullptr;
}

void HeapSource::Free(void* ptr) { ::operator delete(ptr, std::align_val_t(PinnedPool::kAlignment)); }

// One piece handed out: of the region (offset valid) or of the heap (heap_ set). Holds the pool
// so that the region outlives every piece, whichever thread frees the last one.
class PinnedPool::Piece final : public MutableBuffer {
 public:
  Piece(std::shared_ptr<PinnedPool> pool, uint8_t* data, size_t size, size_t offset,
        size_t reserved, bool heap, std::shared_ptr<MemoryAccount> account)
      : pool_(std::move(pool)), data_(data), size_(size), offset_(offset), reserved_(reserved),
        heap_(heap), account_(std::move(account)) {}

  ~Piece() override {
    if (account_ != nullptr) {
      (heap_ ? account_->fallback : account_->pinned) -= static_cast<int64_t>(reserved_);
    }
    if (heap_) {
      ::operator delete(data_, std::align_val_t(kAlignment));
      std::lock_guard<std::mutex> lock(pool_->mu_);
      pool_->stats_.fallback_in_use -= reserved_;
    } else {
      pool_->Release(offset_, reserved_);
    }
  }

  const uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }
  uint8_t* mutable_data() override { return data_; }

 private:
  std::shared_ptr<PinnedPool> pool_;
  uint8_t* data_;
  size_t size_;
  size_t offset_;
  size_t reserved_;  // size_ rounded up to the alignment
  bool heap_;
  std::shared_ptr<MemoryAccount> account_;
};

std::shared_ptr<PinnedPool> PinnedPool::Create(PinnedPoolOptions options) {
  if (options.source == nullptr) options.source = std::make_shared<HeapSource>();
  return std::shared_ptr<PinnedPool>(new PinnedPool(std::move(options)));
}

PinnedPool::PinnedPool(PinnedPoolOptions options) : options_(std::move(options)) {}

PinnedPool::~PinnedPool() {
  if (region_ != nullptr) options_.source->Free(region_);
}

void PinnedPool::ReserveLocked() {
  reserved_ = true;
  if (options_.pool_bytes == 0) return;
  const size_t bytes = RoundUp(options_.pool_bytes);
  if (bytes == 0) return;
  void* region = nullptr;
  Status status = options_.source->Allocate(bytes, &region);
  if (!status.ok()) {
    // Every piece falls back to heap memory; the reason is in /stats' memory figures' source.
    reserve_error_ = status.message();
    return;
  }
  region_ = static_cast<uint8_t*>(region);
  free_.emplace(0, bytes);
  stats_.pool_bytes = bytes;
}

std::shared_ptr<MutableBuffer> PinnedPool::Allocate(size_t bytes,
                                                    std::shared_ptr<MemoryAccount> account) {
  const size_t reserved = RoundUp(bytes);
  if (reserved == 0) return nullptr;
  uint8_t* data = nullptr;
  size_t offset = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!reserved_) ReserveLocked();
    // First fit: the pieces of one batch are freed together, so the free list stays short.
    for (auto it = free_.begin(); it != free_.end(); ++it) {
      if (it->second < reserved) continue;
      offset = it->first;
      const size_t left = it->second - reserved;
      free_.erase(it);
      if (left > 0) free_.emplace(offset + reserved, left);
      data = region_ + offset;
      stats_.pinned_in_use += reserved;
      ++stats_.pinned_allocations;
      break;
    }
    if (data == nullptr) {
      stats_.fallback_in_use += reserved;
      ++stats_.fallback_allocations;
    }
  }
  const bool heap = data == nullptr;
  if (heap) {
    data = static_cast<uint8_t*>(
        ::operator new(reserved, std::align_val_t(kAlignment), std::nothrow));
    if (data == nullptr) {
      std::lock_guard<std::mutex> lock(mu_);
      stats_.fallback_in_use -= reserved;
      --stats_.fallback_allocations;
      return nullptr;
    }
  }
  if (account != nullptr) {
    (heap ? account->fallback : account->pinned) += static_cast<int64_t>(reserved);
  }
  // The Piece's constructor cannot throw; its control block may (bad_alloc): the caller's
  // catch-all turns that into a Status, and then the piece is lost to the pool (rare enough).
  return std::make_shared<Piece>(shared_from_this(), data, bytes, offset, reserved, heap,
                                 std::move(account));
}

void PinnedPool::Release(size_t offset, size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.pinned_in_use -= bytes;
  auto next = free_.lower_bound(offset);
  // Merge with the free block after, then with the one before.
  if (next != free_.end() && offset + bytes == next->first) {
    bytes += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += bytes;
      return;
    }
  }
  free_.emplace(offset, bytes);
}

PinnedPoolStats PinnedPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string PinnedPool::reserve_error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserve_error_;
}

}  // namespace core
}  // namespace pyserver
