// SchedulerOptions and Scheduler: queueing requests from Python, stopping, statistics, test hooks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "core/scheduler.h"

namespace pyserver {
namespace bindings {
namespace {

// The Python object. Its destructor stops the scheduler with the GIL released: the joins may
// wait on a Python engine's worker, which needs the GIL to finish its batch.
struct PyScheduler {
  std::unique_ptr<core::Scheduler> scheduler;

  ~PyScheduler() {
    if (scheduler == nullptr) return;
    py::gil_scoped_release release;  // joins threads that may be waiting for the GIL
    scheduler.reset();
  }
};

// ---- SchedulerOptions: tensor specs as (name, dtype code, dims) tuples ----

py::list SpecsToPython(const std::vector<core::TensorSpec>& specs) {
  py::list list;
  for (const core::TensorSpec& spec : specs) {
    py::tuple dims(spec.dims.size());
    for (size_t i = 0; i < spec.dims.size(); ++i) dims[i] = py::int_(spec.dims[i]);
    list.append(py::make_tuple(spec.name, static_cast<int>(spec.dtype), dims));
  }
  return list;
}

std::vector<core::TensorSpec> SpecsFromPython(const py::iterable& specs) {
  std::vector<core::TensorSpec> result;
  for (py::handle item : specs) {
    if (!py::isinstance<py::sequence>(item) || py::len(item) != 3) {
      throw py::type_error("a tensor spec is a (name, datatype code, dims) tuple");
    }
    py::sequence fields = py::reinterpret_borrow<py::sequence>(item);
    core::TensorSpec spec;
    spec.name = fields[0].cast<std::string>();
    spec.dtype = static_cast<core::DataType>(fields[1].cast<int>());
    spec.dims = fields[2].cast<std::vector<int64_t>>();
    result.push_back(std::move(spec));
  }
  return result;
}

// ---- submit: read shapes and buffer addresses with the GIL held, then enqueue ----

// Reads one (shape, buffer) pair. Empty string on success, else what is wrong.
std::string ReadInput(PyObject* pair, const std::string& name, core::InputData* input) {
  if (!PyTuple_Check(pair) && !PyList_Check(pair)) {
    return name + ": expected a (shape, buffer) pair";
  }
  py::object fields = py::reinterpret_steal<py::object>(PySequence_Fast(pair, ""));
  if (!fields || PySequence_Fast_GET_SIZE(fields.ptr()) != 2) {
    PyErr_Clear();
    return name + ": expected a (shape, buffer) pair";
  }
  PyObject* shape = PySequence_Fast_GET_ITEM(fields.ptr(), 0);
  PyObject* buffer = PySequence_Fast_GET_ITEM(fields.ptr(), 1);

  py::object dims = py::reinterpret_steal<py::object>(PySequence_Fast(shape, ""));
  if (!dims) {
    PyErr_Clear();
    return name + ": the shape must be a sequence of ints";
  }
  const py::ssize_t rank = PySequence_Fast_GET_SIZE(dims.ptr());
  input->shape.resize(static_cast<size_t>(rank));
  for (py::ssize_t k = 0; k < rank; ++k) {
    const long long dim = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(dims.ptr(), k));
    if (dim == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      return name + ": the shape must be a sequence of ints";
    }
    input->shape[static_cast<size_t>(k)] = dim;
  }

  // Only the address and the size: the view is released at once. The caller keeps the owner
  // alive (and unchanged) until this request's completion has been drained.
  Py_buffer view;
  if (PyObject_GetBuffer(buffer, &view, PyBUF_SIMPLE) != 0) {
    PyErr_Clear();
    return name + ": expected a contiguous buffer (bytes, memoryview, numpy array), got " +
           Py_TYPE(buffer)->tp_name;
  }
  input->data = static_cast<const uint8_t*>(view.buf);
  input->bytes = static_cast<size_t>(view.len);
  PyBuffer_Release(&view);
  return std::string();
}

// GIL held throughout: it only reads Python objects and then takes the scheduler's lock for an
// enqueue, which is brief (no thread holding that lock ever waits for the GIL), so releasing and
// re-taking the GIL would cost more than it saves.
void Submit(PyScheduler& self, uint64_t request_id, py::handle inputs, uint64_t priority,
            uint64_t timeout_us) {
  core::Scheduler& scheduler = *self.scheduler;
  const core::ModelSpec& model = scheduler.options().model;
  auto request = std::make_unique<core::Request>();
  request->id = request_id;
  request->priority = priority;
  request->timeout_us = timeout_us;

  std::string error;
  py::object items = py::reinterpret_steal<py::object>(PySequence_Fast(inputs.ptr(), ""));
  if (!items) {
    PyErr_Clear();
    error = "inputs must be a sequence of (shape, buffer) pairs";
  } else {
    const py::ssize_t count = PySequence_Fast_GET_SIZE(items.ptr());
    request->inputs.resize(static_cast<size_t>(count));
    for (py::ssize_t i = 0; i < count && error.empty(); ++i) {
      const size_t index = static_cast<size_t>(i);
      const std::string name = index < model.inputs.size()
                                   ? "input '" + model.inputs[index].name + "'"
                                   : "input #" + std::to_string(index);
      error = ReadInput(PySequence_Fast_GET_ITEM(items.ptr(), i), name, &request->inputs[index]);
    }
  }
  if (!error.empty()) {
    scheduler.Reject(request_id, core::Status::InvalidArgument(std::move(error)));
    return;
  }
  scheduler.Submit(std::move(request));
}

py::dict DurationDict(const core::Duration& d) {
  py::dict dict;
  dict["count"] = d.count;
  dict["ns"] = d.ns;
  return dict;
}

// {"bounds": [...], "counts": [...] (per bucket, one more than bounds: the last is +Inf),
//  "sum": ..., "count": ...}
py::dict HistogramDict(const core::HistogramSnapshot& h) {
  py::dict dict;
  dict["bounds"] = h.bounds;
  dict["counts"] = h.counts;
  dict["sum"] = h.sum;
  dict["count"] = h.count;
  return dict;
}

py::dict StatsDict(const core::StatsSnapshot& s) {
  py::dict dict;
  dict["inference_count"] = s.inference_count;
  dict["execution_count"] = s.execution_count;
  dict["last_inference"] = s.last_inference_ms;
  dict["success"] = DurationDict(s.success);
  dict["fail"] = DurationDict(s.fail);
  dict["queue"] = DurationDict(s.queue);
  dict["compute_input"] = DurationDict(s.compute_input);
  dict["compute_infer"] = DurationDict(s.compute_infer);
  dict["compute_output"] = DurationDict(s.compute_output);
  py::list batch_stats;
  for (const core::BatchSizeStats& b : s.batch_stats) {
    py::dict entry;
    entry["batch_size"] = b.batch_size;
    entry["compute_input"] = DurationDict(b.compute_input);
    entry["compute_infer"] = DurationDict(b.compute_infer);
    entry["compute_output"] = DurationDict(b.compute_output);
    batch_stats.append(std::move(entry));
  }
  dict["batch_stats"] = std::move(batch_stats);
  dict["pending"] = s.pending;
  py::dict reasons;
  for (size_t i = 0; i < core::kFailureReasons; ++i) {
    reasons[core::FailureReasonName(static_cast<core::FailureReason>(i))] = s.fail_by_reason[i];
  }
  dict["fail_by_reason"] = std::move(reasons);
  py::dict histograms;
  histograms["request_duration_ns"] = HistogramDict(s.request_duration);
  histograms["queue_duration_ns"] = HistogramDict(s.queue_duration);
  histograms["compute_duration_ns"] = HistogramDict(s.compute_duration);
  histograms["batch_size"] = HistogramDict(s.batch_size);
  dict["histograms"] = std::move(histograms);
  return dict;
}

std::string PolicyRepr(const core::QueuePolicy& p) {
  return std::string("QueuePolicy(timeout_action=") + (p.delay_on_timeout ? "'DELAY'" : "'REJECT'") +
         ", default_timeout_us=" + std::to_string(p.default_timeout_us) +
         ", allow_timeout_override=" + (p.allow_timeout_override ? "True" : "False") +
         ", max_queue_size=" + std::to_string(p.max_queue_size) + ")";
}

std::string OptionsRepr(const core::SchedulerOptions& o) {
  return "SchedulerOptions(model_name=" + std::string(py::repr(py::str(o.model.name))) +
         ", max_batch_size=" + std::to_string(o.model.max_batch_size) +
         ", preferred_batch_sizes=" + core::ShapeToString(o.preferred_batch_sizes) +
         ", max_queue_delay_us=" + std::to_string(o.max_queue_delay_us) + ", inputs=" +
         std::string(py::repr(SpecsToPython(o.model.inputs))) + ", outputs=" +
         std::string(py::repr(SpecsToPython(o.model.outputs))) +
         ", dynamic_batching=" + (o.dynamic_batching ? "True" : "False") +
         ", priority_levels=" + std::to_string(o.priority_levels) +
         ", default_priority_level=" + std::to_string(o.default_priority_level) +
         ", default_queue_policy=" + PolicyRepr(o.default_queue_policy) +
         ", priority_queue_policy={" + [&o] {
           std::string text;
           for (const auto& entry : o.priority_queue_policy) {
             if (!text.empty()) text += ", ";
             text += std::to_string(entry.first) + ": " + PolicyRepr(entry.second);
           }
           return text;
         }() + "}" +
         ", preserve_ordering=" + (o.preserve_ordering ? "True" : "False") +
         ", latency_target_us=" + std::to_string(o.latency_target_us) +
         ", manual_clock=" + (o.manual_clock ? "True" : "False") + ")";
}

}  // namespace

// The scheduler's monitor; ValueError when the model has no monitoring.
core::Monitor& MonitorOf(PyScheduler& self) {
  core::Monitor* monitor = self.scheduler->monitor();
  if (monitor == nullptr) throw py::value_error("the model has no monitoring (no tensors in "
                                                "SchedulerOptions.monitor)");
  return *monitor;
}

void BindScheduler(py::module_& m) {
  BindMonitor(m);  // SchedulerOptions.monitor's type
  using Policy = core::QueuePolicy;
  py::class_<Policy>(m, "QueuePolicy")
      .def(py::init<>())
      .def_property(
          "timeout_action",
          [](const Policy& p) { return std::string(p.delay_on_timeout ? "DELAY" : "REJECT"); },
          [](Policy& p, const std::string& action) {
            if (action != "REJECT" && action != "DELAY") {
              throw py::value_error("timeout_action is 'REJECT' or 'DELAY', got '" + action + "'");
            }
            p.delay_on_timeout = action == "DELAY";
          })
      .def_readwrite("default_timeout_us", &Policy::default_timeout_us)
      .def_readwrite("allow_timeout_override", &Policy::allow_timeout_override)
      .def_readwrite("max_queue_size", &Policy::max_queue_size)
      .def("__repr__", &PolicyRepr);

  using Options = core::SchedulerOptions;
  py::class_<Options>(m, "SchedulerOptions")
      .def(py::init<>())
      .def_property(
          "model_name", [](const Options& o) { return o.model.name; },
          [](Options& o, std::string name) { o.model.name = std::move(name); })
      .def_property(
          "max_batch_size", [](const Options& o) { return o.model.max_batch_size; },
          [](Options& o, int64_t size) { o.model.max_batch_size = size; })
      .def_readwrite("preferred_batch_sizes", &Options::preferred_batch_sizes)
      .def_readwrite("max_queue_delay_us", &Options::max_queue_delay_us)
      .def_property(
          "inputs", [](const Options& o) { return SpecsToPython(o.model.inputs); },
          [](Options& o, const py::iterable& specs) { o.model.inputs = SpecsFromPython(specs); })
      .def_property(
          "outputs", [](const Options& o) { return SpecsToPython(o.model.outputs); },
          [](Options& o, const py::iterable& specs) { o.model.outputs = SpecsFromPython(specs); })
      .def_readwrite("dynamic_batching", &Options::dynamic_batching)
      .def_readwrite("priority_levels", &Options::priority_levels)
      .def_readwrite("default_priority_level", &Options::default_priority_level)
      .def_readwrite("default_queue_policy", &Options::default_queue_policy)
      .def_readwrite("priority_queue_policy", &Options::priority_queue_policy)
      .def_readwrite("preserve_ordering", &Options::preserve_ordering)
      .def_readwrite("latency_target_us", &Options::latency_target_us)
      .def_readwrite("manual_clock", &Options::manual_clock)
      .def_readwrite("monitor", &Options::monitor)
      .def("__repr__", &OptionsRepr);

  py::class_<PyScheduler>(m, "Scheduler")
      .def(py::init([](const Options& options, std::vector<std::shared_ptr<core::Engine>> engines,
                       std::shared_ptr<core::CompletionQueue> completions) {
             // The scheduler holds the completion queue (shared_ptr): it outlives the Python
             // object if need be.
             auto self = std::make_unique<PyScheduler>();
             ThrowIfError(core::Scheduler::Create(options, std::move(engines),
                                                  std::move(completions), &self->scheduler));
             return self;
           }),
           py::arg("options"), py::arg("engines"), py::arg("completions"))
      .def("submit", &Submit, py::arg("request_id"), py::arg("inputs"), py::arg("priority") = 0,
           py::arg("timeout_us") = 0)
      .def(
          "cancel",
          [](PyScheduler& self, uint64_t request_id) {
            return self.scheduler->Cancel(request_id);
          },
          py::arg("request_id"))
      .def("queue_full", [](PyScheduler& self) { return self.scheduler->QueueFull(); })
      .def("queued", [](PyScheduler& self) { return self.scheduler->Queued(); })
      .def(
          "estimated_execution_us",
          [](PyScheduler& self, int64_t rows) {
            return self.scheduler->EstimatedExecutionUs(rows);
          },
          py::arg("rows"))
      .def("latency_batch_limit",
           [](PyScheduler& self) { return self.scheduler->LatencyBatchLimit(); })
      .def("stats",
           [](PyScheduler& self) {
             py::dict stats = StatsDict(self.scheduler->stats().Snapshot());
             // Waiting in the queue, not yet executing: what Triton's pending gauge counts.
             stats["queued"] = self.scheduler->Queued();
             return stats;
           })
      .def(
          "record_failure",
          [](PyScheduler& self, int64_t duration_ns, bool rejected) {
            self.scheduler->stats().RecordFailure(
                rejected ? core::FailureReason::kRejected : core::FailureReason::kOther,
                static_cast<uint64_t>(duration_ns > 0 ? duration_ns : 0));
          },
          py::arg("duration_ns"), py::arg("rejected") = false)
      .def("pending", [](PyScheduler& self) { return self.scheduler->stats().pending(); })
      .def("stop",
           [](PyScheduler& self) {
             // Joins threads: a Python engine's worker may need the GIL to finish its batch.
             py::gil_scoped_release release;
             self.scheduler->Stop();
           })
      .def(
          "hold",
          [](PyScheduler& self, int64_t queued) {
            if (queued < 0) throw py::value_error("hold() takes a count >= 0");
            self.scheduler->Hold(static_cast<size_t>(queued));
          },
          py::arg("queued"))
      .def(
          "advance_clock",
          [](PyScheduler& self, int64_t microseconds) {
            ThrowIfError(self.scheduler->AdvanceClock(microseconds));
          },
          py::arg("microseconds"))
      .def("batch_sizes", [](PyScheduler& self) { return self.scheduler->stats().BatchSizes(); })
      .def("monitor_start", [](PyScheduler& self) { MonitorOf(self).Start(); })
      .def("monitor_snapshot",
           [](PyScheduler& self) -> py::object {
             core::Monitor* monitor = self.scheduler->monitor();
             if (monitor == nullptr) return py::none();
             return MonitorSnapshotDict(monitor->Snapshot());
           })
      .def(
          "monitor_set_reference",
          [](PyScheduler& self, const std::string& name, int datatype, const py::buffer& data) {
            core::Monitor& monitor = MonitorOf(self);
            const auto& tensors = monitor.options().tensors;
            size_t index = 0;
            while (index < tensors.size() && !(tensors[index].input && tensors[index].name == name)) {
              ++index;
            }
            if (index == tensors.size()) {
              throw py::value_error("input '" + name + "' is not monitored");
            }
            const py::buffer_info info = data.request();  // holds the view while released
            py::ssize_t stride = info.itemsize;
            for (size_t d = info.shape.size(); d-- > 0;) {
              if (info.shape[d] > 1 && info.strides[d] != stride) {
                throw py::value_error("the reference sample must be C-contiguous");
              }
              stride *= info.shape[d];
            }
            const auto* bytes = static_cast<const uint8_t*>(info.ptr);
            const size_t size = static_cast<size_t>(info.size * info.itemsize);
            core::Status status;
            {
              py::gil_scoped_release release;  // a large sample takes a while to histogram
              status = monitor.SetReference(index, static_cast<core::DataType>(datatype), bytes,
                                            size);
            }
            ThrowIfError(status);
          },
          py::arg("input"), py::arg("datatype"), py::arg("data"));
}

}  // namespace bindings
}  // namespace pyserver
