// The GPU path's Python face: the CUDA driver's view, the pinned pool, device engines and the
// objects a Python device engine is handed (pyserver/_core.pyi, "the GPU path").
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>

#include "bindings/bindings.h"
#include "bindings/device_kernel.h"
#include "core/cuda_driver.h"
#include "core/gpu_engine.h"
#include "core/pinned_pool.h"

namespace pyserver {
namespace bindings {
namespace {

struct CudaUnavailableError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct CudaCallError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The process's pinned pool: one for every GPU engine, made when the first is, from the
// driver current then. Replaced (for new engines) when the driver or the size changes;
// engines and buffers made before keep theirs.
std::mutex g_pool_mu;  // guards the three below
size_t g_pool_bytes = 256u << 20;
std::shared_ptr<core::PinnedPool> g_pool;
std::shared_ptr<core::CudaDriver> g_pool_driver;
std::set<int> g_made_current;  // primary contexts this process retained for Python threads

std::shared_ptr<core::CudaDriver> DriverOrThrow() {
  std::string error;
  std::shared_ptr<core::CudaDriver> driver = core::CudaDriver::Default(&error);
  if (driver == nullptr) throw CudaUnavailableError(error);
  return driver;
}

void CheckGpu(const core::CudaDriver& driver, int gpu) {
  const int count = static_cast<int>(driver.devices().size());
  if (gpu < 0 || gpu >= count) {
    throw py::value_error("GPU " + std::to_string(gpu) + " does not exist: the CUDA driver sees " +
                          std::to_string(count) + " GPU(s)");
  }
}

std::shared_ptr<core::PinnedPool> PoolFor(const std::shared_ptr<core::CudaDriver>& driver) {
  std::lock_guard<std::mutex> lock(g_pool_mu);
  if (g_pool == nullptr || g_pool_driver != driver) {
    core::PinnedPoolOptions options;
    options.pool_bytes = g_pool_bytes;
    options.source = std::make_shared<core::CudaPinnedSource>(driver);
    g_pool = core::PinnedPool::Create(std::move(options));
    g_pool_driver = driver;
  }
  return g_pool;
}

py::dict PoolStats(const core::PinnedPoolStats& stats) {
  py::dict out;
  out["pinned_pool_bytes"] = stats.pool_bytes;
  out["pinned_in_use"] = stats.pinned_in_use;
  out["fallback_in_use"] = stats.fallback_in_use;
  out["pinned_allocations"] = stats.pinned_allocations;
  out["fallback_allocations"] = stats.fallback_allocations;
  return out;
}

DeviceOutput::Batch& LiveBatch(const DeviceOutput& output) {
  if (!output.batch->valid) {
    throw py::value_error("this DeviceOutput belongs to a batch that has finished");
  }
  return *output.batch;
}

// A test-facing pool over ordinary heap memory (the host-memory stand-in) and its pieces.
struct HeapPool {
  std::shared_ptr<core::PinnedPool> pool;
  std::shared_ptr<core::MemoryAccount> account = std::make_shared<core::MemoryAccount>();
};
struct Piece {
  std::shared_ptr<core::MutableBuffer> buffer;
};

}  // namespace

void BindDevice(py::module_& m) {
  py::register_exception<CudaUnavailableError>(m, "CudaUnavailable", PyExc_RuntimeError);
  py::register_exception<CudaCallError>(m, "CudaError", PyExc_RuntimeError);

  m.def(
      "cuda_driver",
      []() {
        std::string error;
        std::shared_ptr<core::CudaDriver> driver;
        {
          py::gil_scoped_release release;  // dlopen and cuInit can take a while
          driver = core::CudaDriver::Default(&error);
        }
        py::dict out;
        out["available"] = driver != nullptr;
        out["error"] = error;
        out["library"] = driver != nullptr ? driver->library() : std::string();
        out["driver_version"] = driver != nullptr ? driver->version() : 0;
        py::list devices;
        if (driver != nullptr) {
          for (const core::CudaDevice& device : driver->devices()) {
            py::dict d;
            d["index"] = device.index;
            d["name"] = device.name;
            d["uuid"] = device.uuid;
            d["total_memory"] = device.total_memory;
            devices.append(d);
          }
        }
        out["devices"] = devices;
        return out;
      },
      "What the CUDA driver offers (loaded on first use); never raises.");

  m.def(
      "use_cuda_driver",
      [](std::optional<std::string> path) {
        core::CudaDriver::ReplaceDefault(path.value_or(""));
        std::lock_guard<std::mutex> lock(g_pool_mu);
        g_pool.reset();
        g_pool_driver.reset();
        g_made_current.clear();
      },
      py::arg("path"), "Load the CUDA driver from `path` (None: the default) from now on.");

  m.def(
      "cuda_make_current",
      [](int gpu) {
        std::shared_ptr<core::CudaDriver> driver = DriverOrThrow();
        CheckGpu(*driver, gpu);
        core::CUcontext context = nullptr;
        // Retained once per GPU for the life of the process: libraries on the Python thread
        // (TensorRT's runtime) keep using it.
        core::Status status = driver->RetainPrimaryContext(gpu, &context);
        if (status.ok()) {
          std::lock_guard<std::mutex> lock(g_pool_mu);
          if (!g_made_current.insert(gpu).second) driver->ReleasePrimaryContext(gpu);
        }
        if (status.ok()) status = driver->SetCurrent(context);
        if (!status.ok()) throw CudaCallError(status.message());
      },
      py::arg("gpu"), "Make GPU `gpu`'s primary context current on this thread.");

  m.def(
      "configure_pinned_memory",
      [](int64_t pool_byte_size) {
        if (pool_byte_size < 0) throw py::value_error("pool_byte_size must be >= 0");
        std::lock_guard<std::mutex> lock(g_pool_mu);
        g_pool_bytes = static_cast<size_t>(pool_byte_size);
        g_pool.reset();
        g_pool_driver.reset();
      },
      py::arg("pool_byte_size"), "Size of the pinned host memory pool for GPU engines made next.");

  m.def(
      "memory_stats",
      []() {
        std::shared_ptr<core::PinnedPool> pool;
        {
          std::lock_guard<std::mutex> lock(g_pool_mu);
          pool = g_pool;
        }
        return PoolStats(pool != nullptr ? pool->stats() : core::PinnedPoolStats());
      },
      "The process's staging memory (pinned pool and its fallback).");

  py::class_<DeviceArray>(m, "DeviceArray", "A tensor in device memory.")
      .def_property_readonly("ptr", [](const DeviceArray& a) { return a.ptr; })
      .def_property_readonly("shape", [](const DeviceArray& a) { return ShapeTuple(a.shape); })
      .def_property_readonly("datatype", [](const DeviceArray& a) { return static_cast<int>(a.dtype); })
      .def_property_readonly("nbytes", [](const DeviceArray& a) { return a.bytes; })
      .def_property_readonly("gpu", [](const DeviceArray& a) { return a.gpu; })
      .def_property_readonly("__cuda_array_interface__", [](const DeviceArray& a) {
        const char* typestr = TypeString(a.dtype);
        if (typestr == nullptr) {
          throw py::type_error(std::string(core::DataTypeName(a.dtype)) +
                               " has no CUDA array interface type; use .ptr");
        }
        py::dict cai;
        cai["shape"] = ShapeTuple(a.shape);
        cai["typestr"] = typestr;
        // A zero-size tensor still gets an address of its buffer: consumers accept both.
        cai["data"] = py::make_tuple(a.ptr, false);
        cai["strides"] = py::none();
        cai["version"] = 3;
        // The consumer orders its work after this stream (where the input's copy was queued).
        cai["stream"] = a.stream != 0 ? py::object(py::int_(a.stream)) : py::object(py::none());
        return cai;
      })
      .def("__repr__", [](const DeviceArray& a) {
        return "DeviceArray(gpu=" + std::to_string(a.gpu) + ", shape=" +
               core::ShapeToString(a.shape) + ", datatype=" + core::DataTypeName(a.dtype) + ")";
      });

  py::class_<DeviceOutput>(m, "DeviceOutput", "One output of a batch on a device engine.")
      .def_property_readonly("name", [](const DeviceOutput& o) {
        return LiveBatch(o).outputs->slot(o.index).spec->name;
      })
      .def_property_readonly("datatype", [](const DeviceOutput& o) {
        return static_cast<int>(LiveBatch(o).outputs->slot(o.index).dtype);
      })
      .def("allocate", [](const DeviceOutput& o, const std::vector<int64_t>& shape) {
        DeviceOutput::Batch& batch = LiveBatch(o);
        core::CUdeviceptr ptr = 0;
        core::Status status;
        {
          // Growing the instance's buffer frees and allocates device memory, which can wait
          // for the device: not with the GIL held.
          py::gil_scoped_release release;
          status = batch.outputs->Allocate(o.index, shape, &ptr);
        }
        ThrowIfError(status);
        const core::DeviceOutputSlot& slot = batch.outputs->slot(o.index);
        return DeviceArray{ptr, slot.shape, slot.dtype, slot.bytes, batch.gpu, batch.stream};
      }, py::arg("shape"))
      .def("set", [](const DeviceOutput& o, py::object array) {
        DeviceOutput::Batch& batch = LiveBatch(o);
        const core::DeviceOutputSlot& slot = batch.outputs->slot(o.index);
        const std::string name = "output '" + slot.spec->name + "': ";
        if (!py::hasattr(array, "__cuda_array_interface__")) {
          throw py::type_error(name + "set() takes an object with __cuda_array_interface__, "
                               "got " + std::string(Py_TYPE(array.ptr())->tp_name));
        }
        py::dict cai = array.attr("__cuda_array_interface__");
        core::Shape shape;
        for (py::handle dim : py::tuple(cai["shape"])) shape.push_back(dim.cast<int64_t>());
        const std::string typestr = cai["typestr"].cast<std::string>();
        core::DataType dtype = FromTypeString(typestr);
        // bfloat16 has no typestr of its own: producers (PyTorch) write it as 2-byte void.
        if (dtype == core::DataType::kInvalid && slot.dtype == core::DataType::kBf16 &&
            (typestr == "<V2" || typestr == "|V2")) {
          dtype = core::DataType::kBf16;
        }
        if (dtype == core::DataType::kInvalid) {
          throw py::value_error(name + "typestr " + typestr + " has no v2 datatype");
        }
        if (cai.contains("mask") && !cai["mask"].is_none()) {
          throw py::value_error(name + "masked arrays are not supported");
        }
        if (cai.contains("strides") && !cai["strides"].is_none()) {
          // C-contiguous strides are allowed spelled out; anything else needs a copy first.
          py::tuple strides(cai["strides"]);
          int64_t expected = static_cast<int64_t>(core::ElementSize(dtype));
          for (size_t i = shape.size(); i-- > 0;) {
            if (shape[i] > 1 && strides[i].cast<int64_t>() != expected) {
              throw py::value_error(name + "not C-contiguous (make it contiguous first)");
            }
            expected *= shape[i];
          }
        }
        // Version 3's stream: the producer's work on it must finish before the copy back. None
        // (or absent, as in version 2) means no wait is needed; 0 is not allowed.
        core::CUstream producer = nullptr;
        if (cai.contains("stream") && !cai["stream"].is_none()) {
          const uint64_t handle = cai["stream"].cast<uint64_t>();
          if (handle == 0) throw py::value_error(name + "stream 0 is not allowed (use None)");
          // 1 and 2 are the legacy and per-thread default streams, the driver's own handles.
          if (handle != batch.stream) producer = reinterpret_cast<core::CUstream>(handle);
        }
        py::tuple data(cai["data"]);
        const core::CUdeviceptr ptr = data[0].cast<core::CUdeviceptr>();
        ThrowIfError(batch.outputs->Set(o.index, shape, dtype, ptr, producer));
        batch.keep.push_back(std::move(array));
      }, py::arg("array"));

  py::class_<core::GpuEngine, core::Engine, std::shared_ptr<core::GpuEngine>>(
      m, "DeviceEngine", "An instance on one GPU.")
      .def_property_readonly("gpu", &core::GpuEngine::gpu)
      .def_property_readonly("device_memory_bytes", &core::GpuEngine::device_memory_bytes)
      .def_property_readonly("pinned_bytes", &core::GpuEngine::pinned_bytes)
      .def_property_readonly("fallback_bytes", &core::GpuEngine::fallback_bytes)
      .def_property_readonly("stream", &core::GpuEngine::stream_handle)
      .def("copy_stats", [](const core::GpuEngine& e) {
        const core::GpuEngine::CopyTotals t = e.copy_totals();
        py::dict out;
        out["htod_bytes"] = t.htod_bytes;
        out["htod_ns"] = t.htod_ns;
        out["dtoh_bytes"] = t.dtoh_bytes;
        out["dtoh_ns"] = t.dtoh_ns;
        return out;
      }, "Bytes copied to and from the device since start, and the copies' time by the "
         "device's events (batches whose events could not be read are left out).");

  m.def(
      "device_engine",
      [](py::object engine, int gpu) {
        if (!py::hasattr(engine, "execute") || !PyCallable_Check(engine.attr("execute").ptr())) {
          throw py::type_error("device_engine() needs an object with a callable "
                               "execute(stream, inputs, outputs)");
        }
        core::GpuEngineOptions options;
        options.driver = DriverOrThrow();
        CheckGpu(*options.driver, gpu);
        options.gpu = gpu;
        options.pool = PoolFor(options.driver);
        options.kernel = std::make_shared<PythonDeviceKernel>(std::move(engine), gpu);
        return std::make_shared<core::GpuEngine>(std::move(options));
      },
      py::arg("engine"), py::arg("gpu"), "An instance on GPU `gpu` running a Python device engine.");

  // The pinned pool over the host-memory stand-in, for tests of its accounting and fallback.
  py::class_<Piece>(m, "PoolPiece", py::buffer_protocol())
      .def_buffer([](Piece& p) {
        return py::buffer_info(p.buffer->mutable_data(), 1, "B", 1,
                               {static_cast<py::ssize_t>(p.buffer->size())}, {1});
      })
      .def("release", [](Piece& p) { p.buffer.reset(); });
  py::class_<HeapPool>(m, "HeapPinnedPool")
      .def(py::init([](int64_t pool_byte_size) {
        if (pool_byte_size < 0) throw py::value_error("pool_byte_size must be >= 0");
        core::PinnedPoolOptions options;
        options.pool_bytes = static_cast<size_t>(pool_byte_size);
        options.source = std::make_shared<core::HeapSource>();
        return HeapPool{core::PinnedPool::Create(std::move(options))};
      }), py::arg("pool_byte_size"))
      .def("allocate", [](HeapPool& p, size_t bytes) {
        std::shared_ptr<core::MutableBuffer> buffer = p.pool->Allocate(bytes, p.account);
        if (buffer == nullptr) throw py::error_already_set();
        return Piece{std::move(buffer)};
      }, py::arg("bytes"))
      .def("stats", [](HeapPool& p) { return PoolStats(p.pool->stats()); })
      .def_property_readonly("account_pinned", [](HeapPool& p) { return p.account->pinned.load(); })
      .def_property_readonly("account_fallback", [](HeapPool& p) { return p.account->fallback.load(); });
}

}  // namespace bindings
}  // namespace pyserver
