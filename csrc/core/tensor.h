// Tensors as the core sees them: a declared spec, and bytes owned by a Buffer.
//
// Memory that outlives one thread (batch inputs, engine outputs, the views handed to Python) is
// always held through std::shared_ptr<Buffer>: whoever holds the last reference frees it, on
// whatever thread that happens to be. A Buffer subclass that owns a Python object (see
// bindings/py_buffer.h) takes the GIL in its destructor for that reason.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "core/types.h"

namespace pyserver {
namespace core {

// One input or output as the model declares it. dims exclude the batch dimension when the model
// batches (max_batch_size > 0); -1 means any size.
struct TensorSpec {
  std::string name;
  DataType dtype = DataType::kInvalid;
  Shape dims;
};

// Read access to a block of bytes someone owns.
class Buffer {
 public:
  virtual ~Buffer() = default;
  virtual const uint8_t* data() const = 0;
  virtual size_t size() const = 0;
};

// A Buffer its creator may still write: where batch inputs are gathered.
class MutableBuffer : public Buffer {
 public:
  virtual uint8_t* mutable_data() = 0;
};

// Heap memory aligned to 64 bytes (a cache line, and enough for any SIMD load an engine does).
class AlignedBuffer final : public MutableBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  // nullptr when the memory cannot be had: callers turn that into a Status, never an exception.
  static std::shared_ptr<AlignedBuffer> Create(size_t size) {
    // Never allocate 0 bytes: every buffer has a valid, aligned address (numpy wants one).
    void* memory = ::operator new(size == 0 ? kAlignment : size, std::align_val_t(kAlignment),
                                  std::nothrow);
    if (memory == nullptr) return nullptr;
    std::unique_ptr<AlignedBuffer> buffer(new (std::nothrow) AlignedBuffer(memory, size));
    if (buffer == nullptr) {
      ::operator delete(memory, std::align_val_t(kAlignment));
      return nullptr;
    }
    // The control block may still throw std::bad_alloc (the unique_ptr then frees the buffer);
    // the instance worker's catch-all turns that into a Status.
    return std::shared_ptr<AlignedBuffer>(std::move(buffer));
  }

  ~AlignedBuffer() override { ::operator delete(data_, std::align_val_t(kAlignment)); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;

  const uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }
  uint8_t* mutable_data() override { return data_; }

 private:
  AlignedBuffer(void* memory, size_t size) : data_(static_cast<uint8_t*>(memory)), size_(size) {}

  uint8_t* data_;
  size_t size_;
};

}  // namespace core
}  // namespace pyserver
