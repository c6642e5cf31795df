// MonitorOptions and the monitor's snapshot as Python sees them (csrc/core/monitor.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <utility>

#include "bindings/bindings.h"
#include "core/monitor.h"

namespace pyserver {
namespace bindings {
namespace {

py::dict CountsDict(const core::MonitorCounts& c) {
  py::dict dict;
  dict["counts"] = c.values.counts;  // features x buckets, feature-major
  dict["sums"] = c.values.sums;
  dict["nan"] = c.values.nan;
  dict["inf"] = c.values.inf;
  dict["elements"] = c.values.elements;
  dict["classes"] = c.classes;  // class counts, the last = outside the classes
  return dict;
}

std::string TensorRepr(const core::MonitorTensorOptions& t) {
  std::string buckets = "[";
  for (size_t i = 0; i < t.buckets.size(); ++i) {
    if (i > 0) buckets += ", ";
    buckets += std::string(py::repr(py::float_(t.buckets[i])));
  }
  buckets += "]";
  return "MonitorTensor(name=" + std::string(py::repr(py::str(t.name))) +
         ", input=" + (t.input ? "True" : "False") + ", buckets=" + buckets +
         ", per_feature=" + (t.per_feature ? "True" : "False") +
         ", classes=" + std::to_string(t.classes) + ", top=" + (t.top ? "True" : "False") +
         ", reference_first_window=" + (t.reference_first_window ? "True" : "False") + ")";
}

}  // namespace

py::dict MonitorSnapshotDict(const core::MonitorSnapshot& s) {
  py::dict dict;
  dict["running"] = s.running;
  dict["started_ns"] = s.started_ns;
  dict["now_ns"] = s.now_ns;
  dict["window_ns"] = s.window_ns;
  dict["interval_ns"] = s.interval_ns;
  dict["sample_every"] = s.sample_every;
  dict["batches_seen"] = s.batches_seen;
  dict["batches_sampled"] = s.batches_sampled;
  dict["batches_failed"] = s.batches_failed;
  py::list tensors;
  for (const core::MonitorTensorSnapshot& t : s.tensors) {
    py::dict entry;
    entry["name"] = t.options.name;
    entry["input"] = t.options.input;
    entry["datatype"] = static_cast<int>(t.dtype);
    entry["buckets"] = t.options.buckets;
    entry["per_feature"] = t.options.per_feature;
    entry["top"] = t.options.top;
    entry["features"] = t.features;
    entry["class_count"] = t.class_count;
    entry["total"] = CountsDict(t.total);
    entry["window"] = CountsDict(t.window);
    entry["reference"] = t.has_reference ? py::object(CountsDict(t.reference)) : py::none();
    entry["reference_source"] = t.reference_source;
    entry["psi"] = t.psi;  // NaN where a feature has no data in the window
    entry["psi_pooled"] = t.psi_pooled;
    tensors.append(std::move(entry));
  }
  dict["tensors"] = std::move(tensors);
  return dict;
}

void BindMonitor(py::module_& m) {
  using Tensor = core::MonitorTensorOptions;
  py::class_<Tensor>(m, "MonitorTensor")
      .def(py::init<>())
      .def_readwrite("name", &Tensor::name)
      .def_readwrite("input", &Tensor::input)
      .def_readwrite("buckets", &Tensor::buckets)
      .def_readwrite("per_feature", &Tensor::per_feature)
      .def_readwrite("classes", &Tensor::classes)
      .def_readwrite("top", &Tensor::top)
      .def_readwrite("reference_first_window", &Tensor::reference_first_window)
      .def("__repr__", &TensorRepr);

  using Options = core::MonitorOptions;
  py::class_<Options>(m, "MonitorOptions")
      .def(py::init<>())
      .def_readwrite("sample_every", &Options::sample_every)
      .def_readwrite("window_ns", &Options::window_ns)
      .def_readwrite("intervals", &Options::intervals)
      .def_readwrite("tensors", &Options::tensors)
      .def("__repr__", [](const Options& o) {
        std::string tensors = "[";
        for (size_t i = 0; i < o.tensors.size(); ++i) {
          if (i > 0) tensors += ", ";
          tensors += TensorRepr(o.tensors[i]);
        }
        return "MonitorOptions(sample_every=" + std::to_string(o.sample_every) +
               ", window_ns=" + std::to_string(o.window_ns) +
               ", intervals=" + std::to_string(o.intervals) + ", tensors=" + tensors + "])";
      });
}

}  // namespace bindings
}  // namespace pyserver
