// PythonDeviceKernel: a DeviceKernel written in Python (TensorRT, PyTorch on CUDA), and the
// objects it is handed: DeviceArray (a tensor in device memory, with the CUDA array interface)
// and DeviceOutput (one output slot: allocate core memory, or set memory of the engine's own).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/gpu_engine.h"

namespace pyserver {
namespace bindings {

namespace py = pybind11;

struct DeviceArray {
  core::CUdeviceptr ptr = 0;
  core::Shape shape;
  core::DataType dtype = core::DataType::kInvalid;
  size_t bytes = 0;
  int gpu = 0;
  uint64_t stream = 0;
};

// Valid only while the engine's execute runs: afterwards every call raises.
struct DeviceOutput {
  struct Batch {  // shared by the outputs of one execute call
    bool valid = true;
    core::DeviceOutputs* outputs = nullptr;
    std::vector<py::object> keep;  // engine-owned memory, alive until the copy back is done
    int gpu = 0;
    uint64_t stream = 0;
  };
  std::shared_ptr<Batch> batch;
  size_t index = 0;
};

class PythonDeviceKernel final : public core::DeviceKernel {
 public:
  PythonDeviceKernel(py::object engine, int gpu);  // GIL held
  ~PythonDeviceKernel() override;

  // One GIL acquisition per batch for the engine's execute; released again around the copy
  // back and the stream's synchronization, which may take as long as the model.
  core::Status Execute(core::CUstream stream, const std::vector<core::DeviceTensor>& inputs,
                       core::DeviceOutputs* outputs,
                       const std::function<core::Status()>& copy_back) override;
  void OnWorkerExit() override;

 private:
  py::object engine_;
  int gpu_;
};

// The CUDA array interface's typestr ("<f4") of a datatype; nullptr for BYTES and BF16.
const char* TypeString(core::DataType dtype);
// The datatype of a typestr; kInvalid when it maps to none.
core::DataType FromTypeString(const std::string& typestr);

void BindDevice(py::module_& m);

}  // namespace bindings
}  // namespace pyserver
