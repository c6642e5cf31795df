#include "core/framing.h"

#include <string>

namespace pyserver {
namespace core {

bool SkipFramedElements(const uint8_t* data, size_t size, int64_t count, size_t* offset) {
  size_t pos = *offset;
  for (int64_t i = 0; i < count; ++i) {
    if (size - pos < kFramingHeaderBytes) return false;  // pos <= size holds throughout
    const size_t length = ReadFramedLength(data + pos);
    pos += kFramingHeaderBytes;
    if (size - pos < length) return false;
    pos += length;
  }
  *offset = pos;
  return true;
}

Status CheckFraming(const uint8_t* data, size_t size, int64_t elements) {
  size_t pos = 0;
  for (int64_t i = 0; i < elements; ++i) {
    if (size - pos < kFramingHeaderBytes) {
      return Status::InvalidArgument("BYTES data ends after " + std::to_string(i) + " of " +
                                     std::to_string(elements) + " elements (" +
                                     std::to_string(size) + " bytes)");
    }
    const size_t length = ReadFramedLength(data + pos);
    pos += kFramingHeaderBytes;
    if (size - pos < length) {
      return Status::InvalidArgument("BYTES element " + std::to_string(i) + " declares " +
                                     std::to_string(length) + " bytes but only " +
                                     std::to_string(size - pos) + " remain");
    }
    pos += length;
  }
  if (pos != size) {
    return Status::InvalidArgument("BYTES data has " + std::to_string(size - pos) +
                                   " bytes left over after its " + std::to_string(elements) +
                                   " elements");
  }
  return Status::Ok();
}

}  // namespace core
}  // namespace pyserver
