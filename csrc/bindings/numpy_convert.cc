#include "bindings/numpy_convert.h"

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bindings/py_buffer.h"
#include "core/framing.h"

namespace pyserver {
namespace bindings {
namespace {

constexpr int kNpyHalf = 23;  // NPY_HALF: pybind11's npy_api names no constant for float16

std::string OutputPrefix(const core::BatchTensor& output) {
  return "output '" + output.spec->name + "'";
}

py::array BytesInputToNumpy(const core::BatchTensor& tensor) {
  std::vector<py::ssize_t> dims(tensor.shape.begin(), tensor.shape.end());
  py::array array(py::dtype("O"), std::move(dims));
  PyObject** slots = static_cast<PyObject**>(array.mutable_data());
  const uint8_t* data = tensor.buffer->data();
  const size_t size = tensor.buffer->size();
  size_t pos = 0;
  // The framing was checked per request at submit and the gather concatenated valid framings;
  // the bounds are checked again anyway, since the memory was the caller's until the gather.
  for (py::ssize_t k = 0; k < array.size(); ++k) {
    if (size - pos < core::kFramingHeaderBytes) {
      throw std::runtime_error("BYTES input '" + tensor.spec->name + "' framing ends early");
    }
    const size_t length = core::ReadFramedLength(data + pos);
    pos += core::kFramingHeaderBytes;
    if (size - pos < length) {
      throw std::runtime_error("BYTES input '" + tensor.spec->name + "' element overruns");
    }
    PyObject* item = PyBytes_FromStringAndSize(reinterpret_cast<const char*>(data + pos),
                                               static_cast<py::ssize_t>(length));
    if (item == nullptr) throw py::error_already_set();
    PyObject* old = slots[k];
    slots[k] = item;
    Py_XDECREF(old);
    pos += length;
  }
  return array;
}

// Serializes an object (or bytes/str) array into the BYTES length framing.
core::Status BytesOutputFromNumpy(py::handle result, const py::object& asarray,
                                  core::BatchTensor* output) {
  // Lists become object arrays (never fixed-width 'S' arrays, which drop trailing NULs).
  py::array array = py::isinstance<py::array>(result)
                        ? py::reinterpret_borrow<py::array>(result)
                        : py::array(asarray(result, py::arg("dtype") = py::dtype("O")));
  const char kind = array.dtype().kind();
  if (kind != 'O' && kind != 'S' && kind != 'U') {
    return core::Status::Internal("engine returned " + std::string(py::str(array.dtype())) +
                                  " for " + OutputPrefix(*output) +
                                  "; the model config says BYTES (an object array of bytes)");
  }
  py::list items = array.attr("reshape")(-1).attr("tolist")();

  // Two passes: sizes first, so the framing is written into one exact allocation.
  const py::ssize_t count = static_cast<py::ssize_t>(PyList_GET_SIZE(items.ptr()));
  std::vector<std::pair<const char*, size_t>> spans(static_cast<size_t>(count));
  size_t total = 0;
  for (py::ssize_t k = 0; k < count; ++k) {
    PyObject* item = PyList_GET_ITEM(items.ptr(), k);
    char* bytes = nullptr;
    py::ssize_t length = 0;
    if (PyBytes_Check(item)) {
      PyBytes_AsStringAndSize(item, &bytes, &length);
    } else if (PyUnicode_Check(item)) {
      const char* text = PyUnicode_AsUTF8AndSize(item, &length);
      if (text == nullptr) throw py::error_already_set();
      bytes = const_cast<char*>(text);
    } else if (PyByteArray_Check(item)) {
      bytes = PyByteArray_AS_STRING(item);
      length = PyByteArray_GET_SIZE(item);
    } else {
      return core::Status::Internal("engine returned a " + std::string(Py_TYPE(item)->tp_name) +
                                    " element for BYTES " + OutputPrefix(*output) +
                                    "; expected bytes or str");
    }
    if (static_cast<uint64_t>(length) > std::numeric_limits<uint32_t>::max()) {
      return core::Status::Internal("engine returned a BYTES element over 4 GiB for " +
                                    OutputPrefix(*output));
    }
    spans[static_cast<size_t>(k)] = {bytes, static_cast<size_t>(length)};
    total += core::kFramingHeaderBytes + static_cast<size_t>(length);
  }

  std::shared_ptr<core::AlignedBuffer> buffer = core::AlignedBuffer::Create(total);
  if (buffer == nullptr) {
    return core::Status::Internal("could not allocate " + std::to_string(total) + " bytes for " +
                                  OutputPrefix(*output));
  }
  uint8_t* out = buffer->mutable_data();
  for (const auto& span : spans) {
    core::WriteFramedLength(out, static_cast<uint32_t>(span.second));
    out += core::kFramingHeaderBytes;
    if (span.second > 0) std::memcpy(out, span.first, span.second);
    out += span.second;
  }
  output->dtype = core::DataType::kBytes;
  output->shape.assign(array.shape(), array.shape() + array.ndim());
  output->buffer = std::move(buffer);
  return core::Status::Ok();
}

}  // namespace

py::dtype NumpyDtypeOf(core::DataType dtype) {
  switch (dtype) {
    case core::DataType::kBool: return py::dtype::of<bool>();
    case core::DataType::kUint8: return py::dtype::of<uint8_t>();
    case core::DataType::kUint16: return py::dtype::of<uint16_t>();
    case core::DataType::kUint32: return py::dtype::of<uint32_t>();
    case core::DataType::kUint64: return py::dtype::of<uint64_t>();
    case core::DataType::kInt8: return py::dtype::of<int8_t>();
    case core::DataType::kInt16: return py::dtype::of<int16_t>();
    case core::DataType::kInt32: return py::dtype::of<int32_t>();
    case core::DataType::kInt64: return py::dtype::of<int64_t>();
    case core::DataType::kFp16: return py::dtype(kNpyHalf);
    case core::DataType::kFp32: return py::dtype::of<float>();
    case core::DataType::kFp64: return py::dtype::of<double>();
    case core::DataType::kBf16: return py::dtype::of<uint16_t>();  // numpy has no bfloat16
    case core::DataType::kBytes: return py::dtype("O");
    case core::DataType::kInvalid: break;
  }
  throw std::invalid_argument("no numpy dtype for an invalid datatype");
}

core::DataType DataTypeOfNumpy(const py::dtype& dtype) {
  const char order = dtype.byteorder();
  if (order != '=' && order != '<' && order != '|') return core::DataType::kInvalid;
  const py::ssize_t size = dtype.itemsize();
  switch (dtype.kind()) {
    case 'b':
      return size == 1 ? core::DataType::kBool : core::DataType::kInvalid;
    case 'u':
      switch (size) {
        case 1: return core::DataType::kUint8;
        case 2: return core::DataType::kUint16;
        case 4: return core::DataType::kUint32;
        case 8: return core::DataType::kUint64;
      }
      break;
    case 'i':
      switch (size) {
        case 1: return core::DataType::kInt8;
        case 2: return core::DataType::kInt16;
        case 4: return core::DataType::kInt32;
        case 8: return core::DataType::kInt64;
      }
      break;
    case 'f':
      switch (size) {
        case 2: return core::DataType::kFp16;
        case 4: return core::DataType::kFp32;
        case 8: return core::DataType::kFp64;
      }
      break;
    case 'O':
    case 'S':
    case 'U':
      return core::DataType::kBytes;
  }
  return core::DataType::kInvalid;
}

py::array InputToNumpy(const core::BatchTensor& tensor) {
  if (tensor.dtype == core::DataType::kBytes) return BytesInputToNumpy(tensor);
  // Zero copy: the array's base is a capsule holding the gathered buffer.
  return ArrayOver(NumpyDtypeOf(tensor.dtype), tensor.shape, tensor.buffer->data(),
                   OwnerCapsule(tensor.buffer), /*writeable=*/true);
}

core::Status OutputFromNumpy(py::handle result, const py::object& ascontiguousarray,
                             const py::object& asarray, core::BatchTensor* output) {
  const core::DataType expected = output->spec->dtype;
  if (expected == core::DataType::kBytes) return BytesOutputFromNumpy(result, asarray, output);

  py::array array = ascontiguousarray(result);
  const py::dtype dtype = array.dtype();
  const core::DataType got = DataTypeOfNumpy(dtype);
  // BF16 has no numpy dtype of its own: uint16 bit patterns (or ml_dtypes' bfloat16) carry it.
  const bool bf16_ok = expected == core::DataType::kBf16 &&
                       (got == core::DataType::kUint16 ||
                        (dtype.itemsize() == 2 && std::string(py::str(dtype)) == "bfloat16"));
  if (got != expected && !bf16_ok) {
    return core::Status::Internal("engine returned " + std::string(py::str(dtype)) + " for " +
                                  OutputPrefix(*output) + "; the model config says " +
                                  core::DataTypeName(expected));
  }
  output->dtype = expected;
  output->shape.assign(array.shape(), array.shape() + array.ndim());
  const auto* data = static_cast<const uint8_t*>(array.data());
  const auto size = static_cast<size_t>(array.nbytes());
  // Zero copy: the array itself is the output's owner, kept until the last view goes.
  output->buffer = std::make_shared<PyObjectBuffer>(std::move(array), data, size);
  return core::Status::Ok();
}

}  // namespace bindings
}  // namespace pyserver
