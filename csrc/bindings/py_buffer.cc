#include "bindings/py_buffer.h"

#include <utility>
#include <vector>

namespace pyserver {
namespace bindings {

PyObjectBuffer::~PyObjectBuffer() {
  // Once the interpreter is gone there is nobody to give the reference back to: leak it rather
  // than touch a dead interpreter (only at process exit).
  if (!Py_IsInitialized()) {
    owner_.release();
    return;
  }
  // The last owner may be a worker thread (a failed batch) or the loop thread (a freed view):
  // take the GIL (a no-op when this thread holds it) to drop the reference.
  py::gil_scoped_acquire gil;
  owner_ = py::object();
}

py::capsule OwnerCapsule(std::shared_ptr<core::Buffer> buffer) {
  auto holder = std::make_unique<std::shared_ptr<core::Buffer>>(std::move(buffer));
  py::capsule capsule(holder.get(), [](void* p) {
    // Runs with the GIL held, when the last array over the buffer goes.
    delete static_cast<std::shared_ptr<core::Buffer>*>(p);
  });
  holder.release();  // the capsule owns it now
  return capsule;
}

py::array ArrayOver(const py::dtype& dtype, const core::Shape& shape, const uint8_t* data,
                    py::handle base, bool writeable) {
  std::vector<py::ssize_t> dims(shape.begin(), shape.end());
  // With a base object pybind11 wraps the memory instead of copying it.
  py::array array(dtype, std::move(dims), data, base);
  if (!writeable) {
    // PyArray_CLEARFLAGS(array, NPY_ARRAY_WRITEABLE): many views share one output buffer.
    py::detail::array_proxy(array.ptr())->flags &= ~py::detail::npy_api::NPY_ARRAY_WRITEABLE_;
  }
  return array;
}

}  // namespace bindings
}  // namespace pyserver
