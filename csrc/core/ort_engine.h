// ONNX Runtime in the core: one OrtSession per instance, run with no GIL.
//
// OrtModelSession is a session and what its model declares (the backend reads the inputs and
// outputs from it at load). OrtEngine runs batches on one session:
//   - each gathered input buffer becomes an OrtValue over the same memory (no copy);
//   - an output whose shape the model fixes (every dimension static, or all but the batch
//     dimension when the model batches) is written by ONNX Runtime straight into a buffer the
//     engine allocated for it (a pre-created OrtValue handed to Run; measured cheaper than
//     letting ONNX Runtime allocate: docs/onnxruntime-native.md). A model whose outputs break
//     their declared shapes makes the engine stop doing so (Execute);
//   - any other output is allocated by ONNX Runtime and handed on as it is: the batch's output
//     buffer owns the OrtValue (released when the last response view is dropped). No copy
//     either way.
// Errors from ONNX Runtime become a Status naming the call and ONNX Runtime's message; a failed
// batch fails alone and the instance keeps serving.
//
// String tensors are not handled here: ONNX Runtime's string tensors are arrays of C strings,
// not the core's length framing. Models with one stay on the Python engine (the backend says so).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/engine.h"
#include "core/ort_library.h"

namespace pyserver {
namespace core {

// Session options, as the onnxruntime backend's config parameters name them. Each -1 leaves ONNX
// Runtime's own default (the defaults of onnxruntime.SessionOptions, which are the same).
struct OrtSessionConfig {
  std::string model_path;
  int intra_op_num_threads = -1;      // >= 0; 0 = ONNX Runtime picks
  int inter_op_num_threads = -1;      // >= 0; 0 = ONNX Runtime picks
  int graph_optimization_level = -1;  // 0 (disable), 1 (basic), 2 (extended), 99 (all)
  int execution_mode = -1;            // 0 (sequential), 1 (parallel)
  // ONNX Runtime checks the last two: a value it does not know is INVALID_ARGUMENT naming its
  // setter ("SetSessionExecutionMode: INVALID_ARGUMENT: ...").
};

// One input or output as the model declares it.
struct OrtTensorInfo {
  std::string name;
  // ONNX Runtime's type name: "tensor(float)", "tensor(string)", ... as onnxruntime's Python
  // NodeArg.type spells it; "seq", "map", "opaque", "sparse_tensor", "optional" otherwise.
  std::string type;
  int element_type = 0;  // ort::OrtElementType for a tensor, else 0
  Shape dims;            // -1 where the model leaves a dimension open (symbolic or unknown)
};

// The v2 datatype of an ONNX element type; kInvalid where there is none (complex, float8, ...).
// kBytes for strings (which OrtEngine does not run).
DataType DataTypeOfOrtElement(int element_type);
// The reverse; kOrtUndefined for kBytes and kInvalid.
ort::OrtElementType OrtElementOfDataType(DataType dtype);

class OrtModelSession {
 public:
  // Creates the session (reads and optimizes the model: slow, call without the GIL) and reads
  // what the model declares. INVALID_ARGUMENT for an option out of range (naming the setter
  // that refused it), INTERNAL naming the ONNX Runtime call that failed otherwise (a missing or
  // broken model file: CreateSession).
  static Status Create(std::shared_ptr<OrtLibrary> library, const OrtSessionConfig& config,
                       std::unique_ptr<OrtModelSession>* session);
  ~OrtModelSession();
  OrtModelSession(const OrtModelSession&) = delete;
  OrtModelSession& operator=(const OrtModelSession&) = delete;

  const std::vector<OrtTensorInfo>& inputs() const { return inputs_; }
  const std::vector<OrtTensorInfo>& outputs() const { return outputs_; }
  const OrtLibrary& library() const { return *library_; }
  const std::shared_ptr<OrtLibrary>& shared_library() const { return library_; }
  ort::OrtSession* get() const { return session_; }

 private:
  OrtModelSession() = default;
  Status ReadTensors();

  std::shared_ptr<OrtLibrary> library_;
  ort::OrtSession* session_ = nullptr;
  std::vector<OrtTensorInfo> inputs_;
  std::vector<OrtTensorInfo> outputs_;
};

struct OrtEngineOptions {
  // The model's inputs in the scheduler's input order (every input the model has), and the
  // outputs it serves in the scheduler's output order (any subset).
  std::vector<std::string> input_names;
  std::vector<std::string> output_names;
  // The model batches (max_batch_size > 0): every input's and output's first dimension is the
  // batch's rows.
  bool batching = false;
  // Let ONNX Runtime write outputs of fixed shape into buffers the engine allocates (false:
  // ONNX Runtime allocates every output). For measuring one against the other.
  bool preallocate_outputs = true;
};

class OrtEngine final : public Engine {
 public:
  // INVALID_ARGUMENT when a name is not the model's, an input is left out, or a tensor is a
  // string or of a type with no v2 datatype (UNSUPPORTED for strings).
  static Status Create(std::shared_ptr<OrtModelSession> session, OrtEngineOptions options,
                       std::shared_ptr<OrtEngine>* engine);
  ~OrtEngine() override;

  // On the instance's worker thread, no GIL: wraps the inputs, runs the session, hands on
  // the outputs.
  Status Execute(const BatchInputs& inputs, BatchOutputs* outputs) override;

  uint64_t executions() const { return executions_.load(std::memory_order_relaxed); }
  // Outputs written into engine-allocated buffers, and outputs ONNX Runtime allocated, so far.
  uint64_t preallocated_outputs() const { return preallocated_.load(std::memory_order_relaxed); }
  uint64_t runtime_allocated_outputs() const {
    return runtime_allocated_.load(std::memory_order_relaxed);
  }
  const OrtModelSession& session() const { return *session_; }

 private:
  struct Output {
    std::string name;
    DataType dtype = DataType::kInvalid;
    ort::OrtElementType element_type = ort::kOrtUndefined;
    bool fixed_shape = false;  // known before the run: dims (with rows in front when batching)
    Shape dims;                // the model's dims; dims[0] is replaced by the rows when batching
  };

  OrtEngine(std::shared_ptr<OrtModelSession> session, OrtEngineOptions options);
  Status RunSession(const BatchInputs& inputs, ort::OrtValue* const* in, bool preallocate,
                    BatchOutputs* outputs);
  Status PrepareOutput(const Output& output, int64_t rows, BatchTensor* tensor,
                       ort::OrtValue** value);
  Status TakeOutput(const Output& output, ort::OrtValue** slot,
                    const std::shared_ptr<std::vector<std::shared_ptr<Buffer>>>& keep,
                    BatchTensor* tensor);

  std::shared_ptr<OrtModelSession> session_;
  const ort::OrtApi& api_;
  const OrtLibrary& library_;
  OrtEngineOptions options_;
  ort::OrtMemoryInfo* memory_info_ = nullptr;  // CPU memory: where inputs and outputs live
  std::vector<const char*> input_names_;        // into options_.input_names
  std::vector<const char*> output_names_;       // into outputs_[j].name
  std::vector<Output> outputs_;
  bool any_fixed_shape_ = false;
  // Cleared for good when a batch succeeds only with ONNX Runtime allocating (see Execute).
  std::atomic<bool> preallocate_{true};
  std::atomic<uint64_t> executions_{0};
  std::atomic<uint64_t> preallocated_{0};
  std::atomic<uint64_t> runtime_allocated_{0};
};

}  // namespace core
}  // namespace pyserver
