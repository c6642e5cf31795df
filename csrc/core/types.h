// Datatypes and shapes, numbered and named as Triton's TYPE_* enum (pyserver.types.DataType).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pyserver {
namespace core {

// Keep in step with pyserver/types.py (DataType). BYTES is the one variable-size type: each
// element is a 4-byte little-endian length followed by that many bytes (see framing.h).
enum class DataType : int {
  kInvalid = 0,
  kBool = 1,
  kUint8 = 2,
  kUint16 = 3,
  kUint32 = 4,
  kUint64 = 5,
  kInt8 = 6,
  kInt16 = 7,
  kInt32 = 8,
  kInt64 = 9,
  kFp16 = 10,
  kFp32 = 11,
  kFp64 = 12,
  kBytes = 13,
  kBf16 = 14,
};

// A tensor's dimensions, outermost first.
using Shape = std::vector<int64_t>;

// True for the codes 1..14.
bool IsValidDataType(int code);

// Bytes per element; 0 for BYTES (and for kInvalid).
size_t ElementSize(DataType dtype);

// The v2 name: "FP32", "BYTES", ...
const char* DataTypeName(DataType dtype);

// The product of shape[first..]; false when a dimension is negative or the product overflows.
bool ElementCount(const Shape& shape, size_t first, int64_t* count);

// "[2, 3]": for messages.
std::string ShapeToString(const Shape& shape);

}  // namespace core
}  // namespace pyserver
