// Conversions between core tensors and numpy arrays, for the Python engine. GIL held throughout.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "core/engine.h"
#include "core/status.h"
#include "core/types.h"

namespace pyserver {
namespace bindings {

namespace py = pybind11;

// The numpy dtype an engine sees for a fixed-size datatype (BF16 as uint16).
py::dtype NumpyDtypeOf(core::DataType dtype);

// The datatype of a numpy dtype (native or little-endian byte order), or kInvalid.
core::DataType DataTypeOfNumpy(const py::dtype& dtype);

// A batch tensor as the engine's input: fixed-size types as an array over the gathered buffer
// (no copy; a capsule keeps the buffer alive), BYTES as an object array of `bytes`.
py::array InputToNumpy(const core::BatchTensor& tensor);

// One of the engine's results as a batch output: fixed-size arrays are kept alive as the output
// buffer (no copy) after np.ascontiguousarray; BYTES (object arrays of bytes or str) are
// serialized into the length framing. INTERNAL on a datatype mismatch or a bad element.
core::Status OutputFromNumpy(py::handle result, const py::object& ascontiguousarray,
                             const py::object& asarray, core::BatchTensor* output);

}  // namespace bindings
}  // namespace pyserver
