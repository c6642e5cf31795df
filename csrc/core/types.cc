#include "core/types.h"

namespace pyserver {
namespace core {

bool IsValidDataType(int code) {
  return code >= static_cast<int>(DataType::kBool) && code <= static_cast<int>(DataType::kBf16);
}

size_t ElementSize(DataType dtype) {
  switch (dtype) {
    case DataType::kBool:
    case DataType::kUint8:
    case DataType::kInt8:
      return 1;
    case DataType::kUint16:
    case DataType::kInt16:
    case DataType::kFp16:
    case DataType::kBf16:
      return 2;
    case DataType::kUint32:
    case DataType::kInt32:
    case DataType::kFp32:
      return 4;
    case DataType::kUint64:
    case DataType::kInt64:
    case DataType::kFp64:
      return 8;
    case DataType::kBytes:
    case DataType::kInvalid:
      return 0;
  }
  return 0;
}

const char* DataTypeName(DataType dtype) {
  switch (dtype) {
    case DataType::kBool: return "BOOL";
    case DataType::kUint8: return "UINT8";
    case DataType::kUint16: return "UINT16";
    case DataType::kUint32: return "UINT32";
    case DataType::kUint64: return "UINT64";
    case DataType::kInt8: return "INT8";
    case DataType::kInt16: return "INT16";
    case DataType::kInt32: return "INT32";
    case DataType::kInt64: return "INT64";
    case DataType::kFp16: return "FP16";
    case DataType::kFp32: return "FP32";
    case DataType::kFp64: return "FP64";
    case DataType::kBytes: return "BYTES";
    case DataType::kBf16: return "BF16";
    case DataType::kInvalid: break;
  }
  return "INVALID";
}

bool ElementCount(const Shape& shape, size_t first, int64_t* count) {
  int64_t n = 1;
  for (size_t i = first; i < shape.size(); ++i) {
    if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n)) return false;
  }
  *count = n;
  return true;
}

std::string ShapeToString(const Shape& shape) {
  std::string text = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) text += ", ";
    text += std::to_string(shape[i]);
  }
  text += "]";
  return text;
}

}  // namespace core
}  // namespace pyserver
