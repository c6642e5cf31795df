// Tests of the pinned pool (core/pinned_pool.h): over heap memory (a counting wrapper of
// HeapSource) for its arithmetic (alignment, first fit, merging on free, fallback when full,
// accounting, lifetimes, many threads), and over the fake CUDA driver (CudaPinnedSource) for
// the context the region is allocated in and the reference it holds on it.
//
// Offsets are read from the pieces' addresses: the first piece of an empty pool is at offset 0.

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/cuda_driver.h"
#include "core/pinned_pool.h"
#include "tests/check.h"
#include "tests/core_support.h"
#include "tests/fake_cuda.h"

namespace pyserver {
namespace core {
namespace {

using ::pyserver::testing::ContextScope;
using ::pyserver::testing::FakeCuda;
using Piece = std::shared_ptr<MutableBuffer>;

constexpr size_t kUnit = PinnedPool::kAlignment;

// HeapSource that counts its calls and can be told to refuse.
class CountingSource final : public HostMemorySource {
 public:
  Status Allocate(size_t bytes, void** ptr) override {
    ++allocations;
    last_bytes = bytes;
    if (refuse) return Status::Internal("no pinned memory today");
    return heap_.Allocate(bytes, ptr);
  }
  void Free(void* ptr) override {
    ++frees;
    heap_.Free(ptr);
  }

  std::atomic<int> allocations{0};
  std::atomic<int> frees{0};
  size_t last_bytes = 0;
  bool refuse = false;

 private:
  HeapSource heap_;
};

struct Pool {
  std::shared_ptr<CountingSource> source = std::make_shared<CountingSource>();
  std::shared_ptr<PinnedPool> pool;
  std::shared_ptr<MemoryAccount> account = std::make_shared<MemoryAccount>();

  explicit Pool(size_t bytes) {
    PinnedPoolOptions options;
    options.pool_bytes = bytes;
    options.source = source;
    pool = PinnedPool::Create(options);
  }
  Piece Allocate(size_t bytes, testing::Location where = PYSERVER_CALLER) {
    Piece piece = pool->Allocate(bytes, account);
    CHECK_MSG_AT(where, piece != nullptr, "no piece of " << bytes << " bytes");
    CHECK_EQ_AT(where, piece->size(), bytes);
    CHECK_EQ_AT(where, reinterpret_cast<uintptr_t>(piece->data()) % kUnit, uintptr_t{0});
    return piece;
  }
  PinnedPoolStats stats() const { return pool->stats(); }
};

size_t OffsetOf(const Piece& piece, const Piece& first) {
  return static_cast<size_t>(piece->data() - first->data());
}

// ---- 1. Over heap memory: arithmetic ----------------------------------------------------------

TEST_CASE(PiecesAreAlignedCountedAndReturned) {
  Pool p(4096);
  Piece a = p.Allocate(1000);  // 1024: pieces are whole units
  Piece b = p.Allocate(3000);  // 3072: the pool is full
  CHECK_EQ(OffsetOf(b, a), size_t{1024});
  PinnedPoolStats s = p.stats();
  CHECK_EQ(s.pool_bytes, uint64_t{4096});
  CHECK_EQ(s.pinned_in_use, uint64_t{4096});
  CHECK_EQ(s.pinned_allocations, uint64_t{2});
  CHECK_EQ(s.fallback_allocations, uint64_t{0});
  CHECK_EQ(p.account->pinned.load(), int64_t{4096});

  Piece c = p.Allocate(1);  // no room: ordinary memory, usable all the same
  std::memset(c->mutable_data(), 7, c->size());
  CHECK(c->data() < a->data() || c->data() >= a->data() + 4096);
  s = p.stats();
  CHECK_EQ(s.fallback_in_use, uint64_t{kUnit});
  CHECK_EQ(s.fallback_allocations, uint64_t{1});
  CHECK_EQ(p.account->fallback.load(), int64_t{kUnit});

  a.reset();
  b.reset();
  c.reset();
  s = p.stats();
  CHECK_EQ(s.pinned_in_use, uint64_t{0});
  CHECK_EQ(s.fallback_in_use, uint64_t{0});
  CHECK_EQ(s.pinned_allocations, uint64_t{2});  // since start: they stay
  CHECK_EQ(s.fallback_allocations, uint64_t{1});
  CHECK_EQ(p.account->pinned.load(), int64_t{0});
  CHECK_EQ(p.account->fallback.load(), int64_t{0});
}

TEST_CASE(TheRegionIsReservedOnceOnFirstUseRoundedUp) {
  Pool p(1000);
  CHECK_EQ(p.source->allocations.load(), 0);  // nothing locked until a piece is asked for
  CHECK_EQ(p.stats().pool_bytes, uint64_t{0});
  Piece a = p.Allocate(10);
  Piece b = p.Allocate(10);
  CHECK_EQ(p.source->allocations.load(), 1);
  CHECK_EQ(p.source->last_bytes, size_t{1024});
  CHECK_EQ(p.stats().pool_bytes, uint64_t{1024});
  CHECK(p.pool->reserve_error().empty());
}

TEST_CASE(ZeroBytePiecesTakeOneUnit) {
  Pool p(1024);
  Piece a = p.Allocate(0);
  Piece b = p.Allocate(0);
  CHECK(a->data() != nullptr && a->data() != b->data());
  CHECK_EQ(OffsetOf(b, a), kUnit);
  CHECK_EQ(p.stats().pinned_in_use, uint64_t{2 * kUnit});
}

TEST_CASE(FirstFitTakesTheLowestHoleThatFits) {
  Pool p(4096);
  Piece a = p.Allocate(256);   // [0, 256)
  Piece b = p.Allocate(1024);  // [256, 1280)
  Piece c = p.Allocate(256);   // [1280, 1536)
  Piece d = p.Allocate(512);   // [1536, 2048); [2048, 4096) stays free
  b.reset();                   // a hole of 1024 at 256
  d.reset();                   // merges with the tail: a hole of 2560 at 1536
  Piece e = p.Allocate(512);
  CHECK_EQ(OffsetOf(e, a), size_t{256});  // the first hole that fits, not the largest
  Piece f = p.Allocate(600);              // 768: too big for the 512 left at 768
  CHECK_EQ(OffsetOf(f, a), size_t{1536});
  Piece g = p.Allocate(512);              // exactly the rest of the first hole
  CHECK_EQ(OffsetOf(g, a), size_t{768});
  CHECK_EQ(p.stats().fallback_allocations, uint64_t{0});
}

// Three neighbours freed in every order merge back into one piece the size of the pool.
TEST_CASE(FreedNeighboursMergeInAnyOrder) {
  const std::vector<std::vector<int>> orders = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                                {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (const std::vector<int>& order : orders) {
    Pool p(3 * 1024);
    std::vector<Piece> pieces;
    for (int i = 0; i < 3; ++i) pieces.push_back(p.Allocate(1024));
    for (int i : order) pieces[i].reset();
    CHECK_EQ(p.stats().pinned_in_use, uint64_t{0});
    Piece whole = p.Allocate(3 * 1024);
    CHECK_MSG(p.stats().fallback_allocations == 0,
              "freed in order " << testing::Describe(order) << ": no 3 KiB hole");
    CHECK_EQ(p.stats().pinned_in_use, uint64_t{3 * 1024});
  }
}

TEST_CASE(HolesThatAreNotNeighboursStayApart) {
  Pool p(3 * 1024);
  Piece a = p.Allocate(1024);
  Piece b = p.Allocate(1024);
  Piece c = p.Allocate(1024);
  a.reset();
  c.reset();  // 2 KiB free, but in two holes of 1 KiB
  Piece big = p.Allocate(2048);
  CHECK_EQ(p.stats().fallback_allocations, uint64_t{1});
  Piece small = p.Allocate(1024);
  CHECK_EQ(p.stats().pinned_allocations, uint64_t{4});
  CHECK(small->data() + 1024 == b->data());  // a's old place, before b
}

TEST_CASE(APoolOfZeroBytesServesEverythingFromOrdinaryMemory) {
  Pool p(0);
  Piece a = p.Allocate(100);
  CHECK_EQ(p.source->allocations.load(), 0);
  PinnedPoolStats s = p.stats();
  CHECK_EQ(s.pool_bytes, uint64_t{0});
  CHECK_EQ(s.fallback_allocations, uint64_t{1});
  CHECK_EQ(s.fallback_in_use, uint64_t{kUnit});
}

TEST_CASE(ARegionThatCannotBeHadFallsBackForGood) {
  Pool p(4096);
  p.source->refuse = true;
  Piece a = p.Allocate(100);
  Piece b = p.Allocate(100);
  CHECK_EQ(p.source->allocations.load(), 1);  // tried once, not per piece
  CHECK_EQ(p.pool->reserve_error(), std::string("no pinned memory today"));
  PinnedPoolStats s = p.stats();
  CHECK_EQ(s.pool_bytes, uint64_t{0});
  CHECK_EQ(s.fallback_allocations, uint64_t{2});
  CHECK_EQ(p.account->fallback.load(), int64_t{2 * kUnit});
}

// Sizes whose rounding would wrap are refused; a size the heap cannot give is refused with the
// statistics as they were. (Under ASan the allocator prints a warning for the 8 EiB request:
// expected, and tools/sanitize.sh lets it return nullptr as plain operator new does.)
TEST_CASE(ImpossibleSizesAreRefusedNotWrapped) {
  Pool p(4096);
  CHECK(p.pool->Allocate(SIZE_MAX, p.account) == nullptr);
  CHECK(p.pool->Allocate(SIZE_MAX - kUnit + 2, p.account) == nullptr);
  CHECK(p.pool->Allocate(SIZE_MAX / 2, p.account) == nullptr);
  PinnedPoolStats s = p.stats();
  CHECK_EQ(s.pinned_in_use, uint64_t{0});
  CHECK_EQ(s.fallback_in_use, uint64_t{0});
  CHECK_EQ(s.fallback_allocations, uint64_t{0});
  CHECK_EQ(p.account->fallback.load(), int64_t{0});
  Piece a = p.Allocate(4096);  // the pool is still whole
  CHECK_EQ(p.stats().pinned_allocations, uint64_t{1});
}

TEST_CASE(AccountsAreChargedPerPiece) {
  Pool p(2048);
  auto other = std::make_shared<MemoryAccount>();
  Piece a = p.Allocate(1024);                  // p.account, pinned
  Piece b = p.pool->Allocate(1000, other);     // other, pinned (1024)
  Piece c = p.pool->Allocate(300, other);      // other, fallback (512)
  Piece d = p.pool->Allocate(10, nullptr);     // nobody's, fallback
  CHECK(b != nullptr && c != nullptr && d != nullptr);
  CHECK_EQ(p.account->pinned.load(), int64_t{1024});
  CHECK_EQ(other->pinned.load(), int64_t{1024});
  CHECK_EQ(other->fallback.load(), int64_t{512});
  CHECK_EQ(p.stats().fallback_in_use, uint64_t{512 + kUnit});
  c.reset();
  CHECK_EQ(other->fallback.load(), int64_t{0});
  b.reset();
  CHECK_EQ(other->pinned.load(), int64_t{0});
  CHECK_EQ(p.account->pinned.load(), int64_t{1024});
}

// ---- 2. Over heap memory: lifetimes and threads -----------------------------------------------

TEST_CASE(ThePoolLivesUntilItsLastPiece) {
  Pool p(4096);
  Piece piece = p.Allocate(100);
  std::weak_ptr<PinnedPool> watch = p.pool;
  p.pool.reset();  // the owner lets go; the piece still holds the pool
  CHECK(!watch.expired());
  std::memset(piece->mutable_data(), 1, piece->size());
  CHECK_EQ(p.source->frees.load(), 0);
  std::thread([&piece] { piece.reset(); }).join();  // the last piece goes on another thread
  CHECK(watch.expired());
  CHECK_EQ(p.source->frees.load(), 1);  // and the region with it
}

constexpr int kThreads = 4;
constexpr int kRounds = 1500;

// Threads allocate, fill, check and free pieces of random sizes from one small pool (so some
// fall back); a piece that overlapped another would lose its fill.
TEST_CASE(ManyThreadsShareOnePool) {
  Pool p(16 * 1024);
  std::atomic<int> corrupted{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&p, &corrupted, &refused, t] {
      std::mt19937 random(static_cast<unsigned>(t));
      std::vector<Piece> held;
      for (int round = 0; round < kRounds; ++round) {
        const size_t bytes = 1 + random() % 1500;
        Piece piece = p.pool->Allocate(bytes, p.account);
        if (piece == nullptr) {
          ++refused;
          continue;
        }
        std::memset(piece->mutable_data(), (t * 31 + round) & 0xff, bytes);
        held.push_back(std::move(piece));
        if (held.size() > 4 || round == kRounds - 1) {
          for (Piece& h : held) {
            const uint8_t expect = h->data()[0];
            for (size_t k = 0; k < h->size(); ++k) {
              if (h->data()[k] != expect) {
                ++corrupted;
                break;
              }
            }
          }
          held.clear();
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  CHECK_EQ(corrupted.load(), 0);
  CHECK_EQ(refused.load(), 0);
  PinnedPoolStats s = p.stats();
  CHECK_EQ(s.pinned_allocations + s.fallback_allocations, uint64_t{kThreads * kRounds});
  CHECK(s.pinned_allocations > 0);
  CHECK_EQ(s.pinned_in_use, uint64_t{0});
  CHECK_EQ(s.fallback_in_use, uint64_t{0});
  CHECK_EQ(p.account->pinned.load() + p.account->fallback.load(), int64_t{0});
  Piece whole = p.Allocate(16 * 1024);  // every hole merged back
  CHECK_EQ(p.stats().pinned_in_use, uint64_t{16 * 1024});
}

// ---- 3. Over the fake CUDA driver -------------------------------------------------------------

std::shared_ptr<PinnedPool> CudaPool(const std::shared_ptr<CudaDriver>& driver, size_t bytes) {
  PinnedPoolOptions options;
  options.pool_bytes = bytes;
  options.source = std::make_shared<CudaPinnedSource>(driver);
  return PinnedPool::Create(options);
}

// The region is page-locked memory from the context current where the pool is first used, and
// holds a reference on that context until the region is freed, on whichever thread that is;
// that thread's own current context (none here) is left as it was.
TEST_CASE(CudaRegionHoldsItsContextUntilFreed) {
  FakeCuda fake;
  std::shared_ptr<PinnedPool> pool = CudaPool(fake.driver(), 1 << 20);
  Piece piece;
  {
    ContextScope scope(*fake.driver(), 1);
    piece = pool->Allocate(4096, nullptr);
    CHECK(piece != nullptr);
    CHECK_EQ(pool->stats().pinned_allocations, uint64_t{1});
    CHECK_EQ(fake.Counter("host_alloc"), 1LL);
    CHECK_EQ(fake.Counter("retain"), 2LL);  // the scope's and the region's
  }
  CHECK_EQ(fake.Counter("release"), 1LL);  // the scope's: the region still holds its own
  std::memset(piece->mutable_data(), 3, piece->size());
  pool.reset();
  CUcontext after = reinterpret_cast<CUcontext>(1);
  Status current;
  std::thread([&] {
    piece.reset();  // the last piece, so the pool and its region, on a thread with no context
    current = fake.driver()->GetCurrent(&after);
  }).join();
  CHECK_EQ(fake.Counter("host_free"), 1LL);
  CHECK_EQ(fake.Counter("release"), 2LL);
  CHECK(current.ok());
  CHECK(after == nullptr);
}

TEST_CASE(CudaRegionFreedUnderAnotherContextRestoresIt) {
  FakeCuda fake;
  std::shared_ptr<PinnedPool> pool = CudaPool(fake.driver(), 1 << 20);
  {
    ContextScope scope(*fake.driver(), 1);
    CHECK(pool->Allocate(100, nullptr) != nullptr);
  }
  ContextScope other(*fake.driver(), 0);
  const long long switches = fake.Counter("set_current");
  pool.reset();  // frees the region: GPU 1's context for the call, then GPU 0's again
  CHECK_EQ(fake.Counter("host_free"), 1LL);
  CHECK_EQ(fake.Counter("set_current"), switches + 2);
  CUcontext now = nullptr;
  CHECK(fake.driver()->GetCurrent(&now).ok());
  CHECK(now == other.context());
}

TEST_CASE(CudaPoolWithoutAContextFallsBack) {
  FakeCuda fake;
  std::shared_ptr<PinnedPool> pool = CudaPool(fake.driver(), 1 << 20);
  Piece piece = pool->Allocate(100, nullptr);  // no context current on this thread
  CHECK(piece != nullptr);
  CHECK_EQ(pool->stats().fallback_allocations, uint64_t{1});
  CHECK_EQ(pool->stats().pool_bytes, uint64_t{0});
  CHECK_CONTAINS(pool->reserve_error(), "cuCtxGetDevice: CUDA_ERROR_INVALID_CONTEXT");
  CHECK_EQ(fake.Counter("retain"), 0LL);
  CHECK_EQ(fake.Counter("host_alloc"), 0LL);
}

TEST_CASE(CudaHostAllocFailureFallsBackAndReleasesTheContext) {
  FakeCuda fake;
  std::shared_ptr<PinnedPool> pool = CudaPool(fake.driver(), 1 << 20);
  fake.FailNext("cuMemHostAlloc");
  {
    ContextScope scope(*fake.driver(), 0);
    CHECK(pool->Allocate(100, nullptr) != nullptr);
  }
  CHECK_EQ(pool->stats().fallback_allocations, uint64_t{1});
  CHECK_CONTAINS(pool->reserve_error(), "cuMemHostAlloc: CUDA_ERROR_OUT_OF_MEMORY (out of memory)");
  CHECK_EQ(fake.Counter("retain"), 2LL);
  CHECK_EQ(fake.Counter("release"), 2LL);  // the source gave its reference back at once
}

TEST_CASE(CudaSourceServesOneAllocation) {
  FakeCuda fake;
  ContextScope scope(*fake.driver(), 0);
  CudaPinnedSource source(fake.driver());
  void* first = nullptr;
  CHECK(source.Allocate(4096, &first).ok());
  void* second = nullptr;
  Status status = source.Allocate(4096, &second);
  CHECK_EQ(status.code(), StatusCode::kInternal);
  CHECK_EQ(status.message(), std::string("the pinned source serves one allocation"));
  CHECK(second == nullptr);
  source.Free(first);
  CHECK_EQ(fake.Counter("host_alloc"), 1LL);
  CHECK_EQ(fake.Counter("host_free"), 1LL);
  CHECK_EQ(fake.Counter("retain"), 2LL);
  CHECK_EQ(fake.Counter("release"), 1LL);  // the source's; the scope's goes with the scope
}

}  // namespace
}  // namespace core
}  // namespace pyserver

int main(int argc, char** argv) { return pyserver::testing::RunTests(argc, argv); }
