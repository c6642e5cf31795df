#include "bindings/device_kernel.h"

#include <string>
#include <utility>

#include "bindings/python_engine.h"

namespace pyserver {
namespace bindings {

const char* TypeString(core::DataType dtype) {
  using core::DataType;
  switch (dtype) {
    case DataType::kBool: return "|b1";
    case DataType::kUint8: return "|u1";
    case DataType::kUint16: return "<u2";
    case DataType::kUint32: return "<u4";
    case DataType::kUint64: return "<u8";
    case DataType::kInt8: return "|i1";
    case DataType::kInt16: return "<i2";
    case DataType::kInt32: return "<i4";
    case DataType::kInt64: return "<i8";
    case DataType::kFp16: return "<f2";
    case DataType::kFp32: return "<f4";
    case DataType::kFp64: return "<f8";
    default: return nullptr;  // BYTES has no fixed size; BF16 has no typestr of its own
  }
}

core::DataType FromTypeString(const std::string& typestr) {
  if (typestr.size() < 3) return core::DataType::kInvalid;
  // The byte-order character: little-endian, native or not applicable (one byte) all mean the
  // same on the machines CUDA runs on.
  const char order = typestr[0];
  if (order != '<' && order != '|' && order != '=') return core::DataType::kInvalid;
  const std::string body = typestr.substr(1);
  for (int code = 1; code <= 14; ++code) {
    const auto dtype = static_cast<core::DataType>(code);
    const char* known = TypeString(dtype);
    if (known != nullptr && body == known + 1) return dtype;
  }
  return core::DataType::kInvalid;
}

PythonDeviceKernel::PythonDeviceKernel(py::object engine, int gpu)
    : engine_(std::move(engine)), gpu_(gpu) {}

PythonDeviceKernel::~PythonDeviceKernel() {
  if (!Py_IsInitialized()) {
    engine_.release();
    return;
  }
  py::gil_scoped_acquire gil;
  engine_ = py::object();
}

void PythonDeviceKernel::OnWorkerExit() { ReleasePythonThreadState(); }

core::Status PythonDeviceKernel::Execute(core::CUstream stream,
                                         const std::vector<core::DeviceTensor>& inputs,
                                         core::DeviceOutputs* outputs,
                                         const std::function<core::Status()>& copy_back) {
  KeepPythonThreadState();
  py::gil_scoped_acquire gil;
  const uint64_t handle = reinterpret_cast<uint64_t>(stream);
  auto batch = std::make_shared<DeviceOutput::Batch>();
  batch->outputs = outputs;
  batch->gpu = gpu_;
  batch->stream = handle;
  core::Status status;
  try {
    py::list arrays(inputs.size());
    for (size_t i = 0; i < inputs.size(); ++i) {
      DeviceArray array{inputs[i].ptr, inputs[i].shape, inputs[i].dtype, inputs[i].bytes, gpu_,
                        handle};
      arrays[i] = py::cast(std::move(array));
    }
    py::list slots(outputs->size());
    for (size_t j = 0; j < outputs->size(); ++j) slots[j] = py::cast(DeviceOutput{batch, j});
    engine_.attr("execute")(py::int_(handle), arrays, slots);
    batch->valid = false;
    {
      // The copies back and the wait for the stream need no Python: let the loop run.
      py::gil_scoped_release release;
      status = copy_back();
    }
  } catch (py::error_already_set& error) {
    status = core::Status::Internal("engine.execute raised " + DescribePythonError(error));
  } catch (const std::exception& error) {
    status = core::Status::Internal(std::string("engine.execute failed: ") + error.what());
  }
  batch->valid = false;
  batch->keep.clear();  // GIL held
  return status;
}

}  // namespace bindings
}  // namespace pyserver
