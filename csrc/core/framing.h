// The BYTES tensor layout shared by the v2 binary extension and Triton: every element is a
// 4-byte little-endian length followed by that many bytes, elements back to back, row-major.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/status.h"

namespace pyserver {
namespace core {

constexpr size_t kFramingHeaderBytes = 4;

// The little-endian length prefix at p (which must have 4 readable bytes).
inline uint32_t ReadFramedLength(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

inline void WriteFramedLength(uint8_t* p, uint32_t length) {
  p[0] = static_cast<uint8_t>(length);
  p[1] = static_cast<uint8_t>(length >> 8);
  p[2] = static_cast<uint8_t>(length >> 16);
  p[3] = static_cast<uint8_t>(length >> 24);
}

// Moves *offset past `count` framed elements of data[0, size). False (offset unspecified) when an
// element's header or body runs past the end.
bool SkipFramedElements(const uint8_t* data, size_t size, int64_t count, size_t* offset);

// OK when data[0, size) holds exactly `elements` framed elements and nothing else; otherwise
// INVALID_ARGUMENT saying what is wrong (the caller prefixes the tensor's name).
Status CheckFraming(const uint8_t* data, size_t size, int64_t elements);

}  // namespace core
}  // namespace pyserver
