// CompletionQueue: the event loop's side. fileno() for loop.add_reader, drain() for the results.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "bindings/py_buffer.h"
#include "core/completion_queue.h"

namespace pyserver {
namespace bindings {
namespace {

// GIL held, on the loop thread. Builds (request_id, status_code, payload) tuples: OK -> one
// (shape, flat read-only uint8 array over the request's bytes) per output, zero copy; else the
// message. Views of the same output buffer share one capsule.
py::list Drain(core::CompletionQueue& queue) {
  // A brief lock (a vector swap); workers never hold it for long, so the GIL stays held.
  std::vector<core::Completion> completions = queue.Drain();

  py::list result(completions.size());
  const py::dtype uint8 = py::dtype::of<uint8_t>();
  // capsules[j]: the capsule of the last owner seen for output j. Consecutive completions of one
  // batch share their output buffers, so one capsule serves the whole batch.
  std::vector<std::pair<const core::Buffer*, py::object>> capsules;
  for (size_t i = 0; i < completions.size(); ++i) {
    core::Completion& completion = completions[i];
    py::object payload;
    if (completion.status.ok()) {
      if (capsules.size() < completion.outputs.size()) capsules.resize(completion.outputs.size());
      py::list outputs(completion.outputs.size());
      for (size_t j = 0; j < completion.outputs.size(); ++j) {
        core::OutputView& view = completion.outputs[j];
        if (capsules[j].first != view.owner.get()) {
          capsules[j].first = view.owner.get();
          capsules[j].second = OwnerCapsule(view.owner);
        }
        py::array bytes =
            ArrayOver(uint8, core::Shape{static_cast<int64_t>(view.bytes)},
                      view.owner->data() + view.offset, capsules[j].second, /*writeable=*/false);
        outputs[j] = py::make_tuple(ShapeTuple(view.shape), std::move(bytes));
      }
      payload = std::move(outputs);
    } else {
      payload = py::str(completion.status.message());
    }
    result[i] = py::make_tuple(completion.request_id, static_cast<int>(completion.status.code()),
                               std::move(payload));
  }
  return result;
}

}  // namespace

void BindCompletionQueue(py::module_& m) {
  py::class_<core::CompletionQueue, std::shared_ptr<core::CompletionQueue>>(m, "CompletionQueue")
      .def(py::init([] {
        std::shared_ptr<core::CompletionQueue> queue;
        ThrowIfError(core::CompletionQueue::Create(&queue));
        return queue;
      }))
      .def("fileno", &core::CompletionQueue::fd,
           "The eventfd: readable when completions are waiting.")
      .def("drain", &Drain,
           "Reset the eventfd and return every waiting completion (call on the loop thread).")
      .def("close", &core::CompletionQueue::Close);
}

}  // namespace bindings
}  // namespace pyserver
