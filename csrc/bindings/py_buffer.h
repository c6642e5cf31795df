// Memory shared between the core and Python, in both directions.
//
// Core -> Python: a numpy array over a core Buffer gets a capsule as its base; the capsule holds
// a std::shared_ptr to the Buffer, so the memory lives as long as any array over it (zero copy).
// Python -> core: PyObjectBuffer keeps a Python object (an engine's output array) alive as a core
// Buffer; its destructor takes the GIL, since the last reference may go on any thread.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace pyserver {
namespace bindings {

namespace py = pybind11;

class PyObjectBuffer final : public core::Buffer {
 public:
  // GIL held. `data`/`size` must stay valid while `owner` lives (e.g. a contiguous array's data).
  PyObjectBuffer(py::object owner, const uint8_t* data, size_t size)
      : owner_(std::move(owner)), data_(data), size_(size) {}
  ~PyObjectBuffer() override;

  const uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }

 private:
  py::object owner_;
  const uint8_t* data_;
  size_t size_;
};

// GIL held. A capsule owning a copy of `buffer` (one reference).
py::capsule OwnerCapsule(std::shared_ptr<core::Buffer> buffer);

// GIL held. A numpy array over `data` (which `base` keeps alive), C order, no copy.
py::array ArrayOver(const py::dtype& dtype, const core::Shape& shape, const uint8_t* data,
                    py::handle base, bool writeable);

}  // namespace bindings
}  // namespace pyserver
