#include "core/ort_engine.h"

#include <cstring>
#include <utility>

namespace pyserver {
namespace core {
namespace {

// OrtValues a batch made, released when it ends, whatever happened (the OrtValues over our
// buffers do not own them; ONNX Runtime's own outputs are taken out before, see TakeOutput).
// The array is the calling thread's `scratch`, kept between batches: no allocation per batch.
class ValueList {
 public:
  ValueList(const ort::OrtApi& api, std::vector<ort::OrtValue*>* scratch, size_t n)
      : api_(api), values_(*scratch) {
    values_.assign(n, nullptr);
  }
  ~ValueList() {
    for (ort::OrtValue* value : values_) {
      if (value != nullptr) api_.ReleaseValue(value);
    }
    values_.clear();
  }
  ValueList(const ValueList&) = delete;
  ValueList& operator=(const ValueList&) = delete;

  ort::OrtValue** data() { return values_.data(); }
  ort::OrtValue*& operator[](size_t i) { return values_[i]; }

 private:
  const ort::OrtApi& api_;
  std::vector<ort::OrtValue*>& values_;
};

// An output ONNX Runtime allocated, handed on without a copy: the response views share it, and
// the last one to go releases the OrtValue (on whatever thread: ReleaseValue needs no GIL and
// ONNX Runtime's allocators are thread-safe; the tensor holds its allocator alive, so this may
// outlive the session). It also holds the batch's input buffers: where ONNX Runtime makes an
// output an alias of an input (an Identity node on a graph input), the output's bytes are the
// input's, which the core would otherwise free when the batch ends.
class OrtValueBuffer final : public Buffer {
 public:
  OrtValueBuffer(std::shared_ptr<OrtLibrary> library, ort::OrtValue* value, const void* data,
                 size_t size, std::shared_ptr<std::vector<std::shared_ptr<Buffer>>> inputs)
      : library_(std::move(library)),
        value_(value),
        data_(static_cast<const uint8_t*>(data)),
        size_(size),
        inputs_(std::move(inputs)) {}
  ~OrtValueBuffer() override { library_->api().ReleaseValue(value_); }
  OrtValueBuffer(const OrtValueBuffer&) = delete;
  OrtValueBuffer& operator=(const OrtValueBuffer&) = delete;

  const uint8_t* data() const override { return data_; }
  size_t size() const override { return size_; }

 private:
  std::shared_ptr<OrtLibrary> library_;
  ort::OrtValue* value_;
  const uint8_t* data_;
  size_t size_;
  std::shared_ptr<std::vector<std::shared_ptr<Buffer>>> inputs_;
};

const char* ElementTypeName(int element_type) {
  switch (element_type) {
    case ort::kOrtFloat: return "float";
    case ort::kOrtUint8: return "uint8";
    case ort::kOrtInt8: return "int8";
    case ort::kOrtUint16: return "uint16";
    case ort::kOrtInt16: return "int16";
    case ort::kOrtInt32: return "int32";
    case ort::kOrtInt64: return "int64";
    case ort::kOrtString: return "string";
    case ort::kOrtBool: return "bool";
    case ort::kOrtFloat16: return "float16";
    case ort::kOrtDouble: return "double";
    case ort::kOrtUint32: return "uint32";
    case ort::kOrtUint64: return "uint64";
    case ort::kOrtComplex64: return "complex64";
    case ort::kOrtComplex128: return "complex128";
    case ort::kOrtBfloat16: return "bfloat16";
    default: return nullptr;
  }
}

const char* OnnxTypeName(int onnx_type) {
  switch (onnx_type) {
    case ort::kOrtTypeSequence: return "seq";
    case ort::kOrtTypeMap: return "map";
    case ort::kOrtTypeOpaque: return "opaque";
    case ort::kOrtTypeSparseTensor: return "sparse_tensor";
    case ort::kOrtTypeOptional: return "optional";
    default: return "unknown";
  }
}

// Reads one input's or output's name, type and dims. `index` < the session's count.
Status ReadTensor(const OrtLibrary& library, const ort::OrtSession* session, bool input,
                  size_t index, OrtTensorInfo* info) {
  const ort::OrtApi& api = library.api();
  ort::OrtAllocator* allocator = nullptr;
  Status status = library.Check(api.GetAllocatorWithDefaultOptions(&allocator),
                                "GetAllocatorWithDefaultOptions");
  if (!status.ok()) return status;
  char* name = nullptr;
  status = input ? library.Check(api.SessionGetInputName(session, index, allocator, &name),
                                 "SessionGetInputName")
                 : library.Check(api.SessionGetOutputName(session, index, allocator, &name),
                                 "SessionGetOutputName");
  if (!status.ok()) return status;
  info->name = name;
  status = library.Check(api.AllocatorFree(allocator, name), "AllocatorFree");
  if (!status.ok()) return status;

  ort::OrtTypeInfo* type_info = nullptr;
  status = input ? library.Check(api.SessionGetInputTypeInfo(session, index, &type_info),
                                 "SessionGetInputTypeInfo")
                 : library.Check(api.SessionGetOutputTypeInfo(session, index, &type_info),
                                 "SessionGetOutputTypeInfo");
  if (!status.ok()) return status;
  // From here type_info is ours: every path below releases it once.
  ort::OrtOnnxType onnx_type = ort::kOrtTypeUnknown;
  status = library.Check(api.GetOnnxTypeFromTypeInfo(type_info, &onnx_type),
                         "GetOnnxTypeFromTypeInfo");
  if (status.ok() && onnx_type != ort::kOrtTypeTensor) {
    info->type = OnnxTypeName(onnx_type);
    api.ReleaseTypeInfo(type_info);
    return Status::Ok();
  }
  const ort::OrtTensorTypeAndShapeInfo* tensor = nullptr;  // owned by type_info
  if (status.ok()) {
    status = library.Check(api.CastTypeInfoToTensorInfo(type_info, &tensor),
                           "CastTypeInfoToTensorInfo");
  }
  ort::OrtElementType element = ort::kOrtUndefined;
  if (status.ok()) {
    status = library.Check(api.GetTensorElementType(tensor, &element), "GetTensorElementType");
  }
  size_t rank = 0;
  if (status.ok()) {
    status = library.Check(api.GetDimensionsCount(tensor, &rank), "GetDimensionsCount");
  }
  if (status.ok()) {
    info->dims.assign(rank, -1);
    status = library.Check(api.GetDimensions(tensor, info->dims.data(), rank), "GetDimensions");
  }
  api.ReleaseTypeInfo(type_info);
  if (!status.ok()) return status;
  for (int64_t& dim : info->dims) {
    if (dim < 0) dim = -1;  // symbolic ("batch") and unknown dimensions alike
  }
  info->element_type = element;
  const char* element_name = ElementTypeName(element);
  info->type = element_name != nullptr ? std::string("tensor(") + element_name + ")"
                                       : "tensor(type " + std::to_string(element) + ")";
  return Status::Ok();
}

}  // namespace

DataType DataTypeOfOrtElement(int element_type) {
  switch (element_type) {
    case ort::kOrtBool: return DataType::kBool;
    case ort::kOrtUint8: return DataType::kUint8;
    case ort::kOrtUint16: return DataType::kUint16;
    case ort::kOrtUint32: return DataType::kUint32;
    case ort::kOrtUint64: return DataType::kUint64;
    case ort::kOrtInt8: return DataType::kInt8;
    case ort::kOrtInt16: return DataType::kInt16;
    case ort::kOrtInt32: return DataType::kInt32;
    case ort::kOrtInt64: return DataType::kInt64;
    case ort::kOrtFloat16: return DataType::kFp16;
    case ort::kOrtFloat: return DataType::kFp32;
    case ort::kOrtDouble: return DataType::kFp64;
    case ort::kOrtString: return DataType::kBytes;
    case ort::kOrtBfloat16: return DataType::kBf16;
    default: return DataType::kInvalid;
  }
}

ort::OrtElementType OrtElementOfDataType(DataType dtype) {
  switch (dtype) {
    case DataType::kBool: return ort::kOrtBool;
    case DataType::kUint8: return ort::kOrtUint8;
    case DataType::kUint16: return ort::kOrtUint16;
    case DataType::kUint32: return ort::kOrtUint32;
    case DataType::kUint64: return ort::kOrtUint64;
    case DataType::kInt8: return ort::kOrtInt8;
    case DataType::kInt16: return ort::kOrtInt16;
    case DataType::kInt32: return ort::kOrtInt32;
    case DataType::kInt64: return ort::kOrtInt64;
    case DataType::kFp16: return ort::kOrtFloat16;
    case DataType::kFp32: return ort::kOrtFloat;
    case DataType::kFp64: return ort::kOrtDouble;
    case DataType::kBf16: return ort::kOrtBfloat16;
    default: return ort::kOrtUndefined;  // BYTES: not run here
  }
}

// --- OrtModelSession ------------------------------------------------------------------------

Status OrtModelSession::Create(std::shared_ptr<OrtLibrary> library,
                               const OrtSessionConfig& config,
                               std::unique_ptr<OrtModelSession>* out) {
  if (config.intra_op_num_threads < -1 || config.inter_op_num_threads < -1) {
    return Status::InvalidArgument("intra_op_num_threads and inter_op_num_threads must be >= 0");
  }
  // The level and the mode are ONNX Runtime's to check (its setters refuse values they do not
  // know, naming the setting); -1 alone means "leave the default".
  const int level = config.graph_optimization_level;
  const ort::OrtApi& api = library->api();
  ort::OrtSessionOptions* options = nullptr;
  Status status = library->Check(api.CreateSessionOptions(&options), "CreateSessionOptions");
  if (!status.ok()) return status;
  // Only what the config sets; the rest stays ONNX Runtime's default, as in the Python engine.
  if (status.ok() && config.intra_op_num_threads >= 0) {
    status = library->Check(api.SetIntraOpNumThreads(options, config.intra_op_num_threads),
                            "SetIntraOpNumThreads", StatusCode::kInvalidArgument);
  }
  if (status.ok() && config.inter_op_num_threads >= 0) {
    status = library->Check(api.SetInterOpNumThreads(options, config.inter_op_num_threads),
                            "SetInterOpNumThreads", StatusCode::kInvalidArgument);
  }
  if (status.ok() && level != -1) {
    status = library->Check(
        api.SetSessionGraphOptimizationLevel(options,
                                             static_cast<ort::OrtGraphOptimizationLevel>(level)),
        "SetSessionGraphOptimizationLevel", StatusCode::kInvalidArgument);
  }
  if (status.ok() && config.execution_mode != -1) {
    status = library->Check(
        api.SetSessionExecutionMode(options,
                                    static_cast<ort::OrtExecutionMode>(config.execution_mode)),
        "SetSessionExecutionMode", StatusCode::kInvalidArgument);
  }
  std::unique_ptr<OrtModelSession> session(new OrtModelSession);
  session->library_ = library;
  if (status.ok()) {
    status = library->Check(api.CreateSession(library->env(), config.model_path.c_str(), options,
                                              &session->session_),
                            "CreateSession");
  }
  // The session keeps what it needs of the options.
  api.ReleaseSessionOptions(options);
  if (!status.ok()) return status;
  status = session->ReadTensors();
  if (!status.ok()) return status;
  *out = std::move(session);
  return Status::Ok();
}

OrtModelSession::~OrtModelSession() {
  // Joins the session's own thread pools: quick, and never waits for the GIL.
  if (session_ != nullptr) library_->api().ReleaseSession(session_);
}

Status OrtModelSession::ReadTensors() {
  const ort::OrtApi& api = library_->api();
  size_t count = 0;
  Status status = library_->Check(api.SessionGetInputCount(session_, &count),
                                  "SessionGetInputCount");
  if (!status.ok()) return status;
  inputs_.resize(count);
  for (size_t i = 0; i < count && status.ok(); ++i) {
    status = ReadTensor(*library_, session_, true, i, &inputs_[i]);
  }
  if (!status.ok()) return status;
  status = library_->Check(api.SessionGetOutputCount(session_, &count), "SessionGetOutputCount");
  if (!status.ok()) return status;
  outputs_.resize(count);
  for (size_t j = 0; j < count && status.ok(); ++j) {
    status = ReadTensor(*library_, session_, false, j, &outputs_[j]);
  }
  return status;
}

// --- OrtEngine --------------------------------------------------------------------------------

namespace {

// Checks that `info` is a tensor the engine can run; `kind` is "input" or "output".
Status CheckRunnable(const OrtTensorInfo& info, const char* kind) {
  const std::string what = std::string(kind) + " '" + info.name + "'";
  if (info.element_type == 0) {
    return Status::InvalidArgument(what + " is a " + info.type + ", not a tensor");
  }
  const DataType dtype = DataTypeOfOrtElement(info.element_type);
  if (dtype == DataType::kBytes) {
    return Status(StatusCode::kUnsupported,
                  what + " is a string tensor: the native engine runs numeric tensors only");
  }
  if (dtype == DataType::kInvalid) {
    return Status::InvalidArgument(what + " has type " + info.type + ", which has no v2 datatype");
  }
  return Status::Ok();
}

const OrtTensorInfo* FindTensor(const std::vector<OrtTensorInfo>& tensors,
                                const std::string& name) {
  for (const OrtTensorInfo& info : tensors) {
    if (info.name == name) return &info;
  }
  return nullptr;
}

}  // namespace

OrtEngine::OrtEngine(std::shared_ptr<OrtModelSession> session, OrtEngineOptions options)
    : session_(std::move(session)),
      api_(session_->library().api()),
      library_(session_->library()),
      options_(std::move(options)) {}

OrtEngine::~OrtEngine() {
  if (memory_info_ != nullptr) api_.ReleaseMemoryInfo(memory_info_);
}

Status OrtEngine::Create(std::shared_ptr<OrtModelSession> session, OrtEngineOptions options,
                         std::shared_ptr<OrtEngine>* out) {
  const OrtModelSession& s = *session;
  // Inputs: exactly the model's, each once (ONNX Runtime needs every input fed).
  if (options.input_names.size() != s.inputs().size()) {
    return Status::InvalidArgument("the model has " + std::to_string(s.inputs().size()) +
                                   " inputs; the engine was given " +
                                   std::to_string(options.input_names.size()));
  }
  for (size_t i = 0; i < options.input_names.size(); ++i) {
    const std::string& name = options.input_names[i];
    const OrtTensorInfo* info = FindTensor(s.inputs(), name);
    if (info == nullptr) return Status::InvalidArgument("the model has no input '" + name + "'");
    for (size_t k = 0; k < i; ++k) {
      if (options.input_names[k] == name) {
        return Status::InvalidArgument("input '" + name + "' is named twice");
      }
    }
    Status status = CheckRunnable(*info, "input");
    if (!status.ok()) return status;
  }
  std::shared_ptr<OrtEngine> engine(new OrtEngine(std::move(session), std::move(options)));
  const OrtEngineOptions& o = engine->options_;
  for (const std::string& name : o.input_names) engine->input_names_.push_back(name.c_str());
  engine->outputs_.reserve(o.output_names.size());
  for (const std::string& name : o.output_names) {
    const OrtTensorInfo* info = FindTensor(s.outputs(), name);
    if (info == nullptr) return Status::InvalidArgument("the model has no output '" + name + "'");
    Status status = CheckRunnable(*info, "output");
    if (!status.ok()) return status;
    Output output;
    output.name = name;
    output.dtype = DataTypeOfOrtElement(info->element_type);
    output.element_type = static_cast<ort::OrtElementType>(info->element_type);
    output.dims = info->dims;
    // Fixed: every dimension static, except the batch dimension when batching (the rows).
    output.fixed_shape = o.preallocate_outputs && (!o.batching || !output.dims.empty());
    for (size_t d = o.batching ? 1 : 0; d < output.dims.size(); ++d) {
      if (output.dims[d] < 0) output.fixed_shape = false;
    }
    engine->outputs_.push_back(std::move(output));
  }
  for (const Output& output : engine->outputs_) {
    engine->output_names_.push_back(output.name.c_str());
    engine->any_fixed_shape_ = engine->any_fixed_shape_ || output.fixed_shape;
  }
  Status status = engine->library_.Check(
      engine->api_.CreateCpuMemoryInfo(ort::kOrtArenaAllocator, ort::kOrtMemTypeDefault,
                                       &engine->memory_info_),
      "CreateCpuMemoryInfo");
  if (!status.ok()) return status;
  *out = std::move(engine);
  return Status::Ok();
}

// Precondition: output.fixed_shape. Allocates the output's buffer for a batch of `rows` and
// wraps it as the OrtValue ONNX Runtime writes into.
Status OrtEngine::PrepareOutput(const Output& output, int64_t rows, BatchTensor* tensor,
                                ort::OrtValue** value) {
  tensor->shape = output.dims;
  if (options_.batching) tensor->shape[0] = rows;
  int64_t elements = 0;
  if (!ElementCount(tensor->shape, 0, &elements)) {
    return Status::Internal("output '" + output.name + "': shape " +
                            ShapeToString(tensor->shape) + " is too large");
  }
  const size_t bytes = static_cast<size_t>(elements) * ElementSize(output.dtype);
  std::shared_ptr<AlignedBuffer> buffer = AlignedBuffer::Create(bytes);
  if (buffer == nullptr) {
    return Status::Internal("output '" + output.name + "': could not allocate " +
                            std::to_string(bytes) + " bytes");
  }
  Status status = library_.Check(
      api_.CreateTensorWithDataAsOrtValue(memory_info_, buffer->mutable_data(), bytes,
                                          tensor->shape.data(), tensor->shape.size(),
                                          output.element_type, value),
      "CreateTensorWithDataAsOrtValue");
  if (!status.ok()) return status;
  tensor->dtype = output.dtype;
  tensor->buffer = std::move(buffer);
  return Status::Ok();
}

// After Run, for an output ONNX Runtime allocated (*slot): reads its type and shape and hands
// the OrtValue on in a buffer of its own, which then releases it (and *slot becomes nullptr).
// On failure *slot still holds it.
Status OrtEngine::TakeOutput(const Output& output, ort::OrtValue** slot,
                             const std::shared_ptr<std::vector<std::shared_ptr<Buffer>>>& keep,
                             BatchTensor* tensor) {
  ort::OrtValue* value = *slot;
  ort::OrtTensorTypeAndShapeInfo* info = nullptr;
  Status status = library_.Check(api_.GetTensorTypeAndShape(value, &info),
                                 "GetTensorTypeAndShape");
  if (!status.ok()) return status;
  ort::OrtElementType element = ort::kOrtUndefined;
  size_t rank = 0;
  status = library_.Check(api_.GetTensorElementType(info, &element), "GetTensorElementType");
  if (status.ok()) {
    status = library_.Check(api_.GetDimensionsCount(info, &rank), "GetDimensionsCount");
  }
  if (status.ok()) {
    tensor->shape.assign(rank, 0);
    status = library_.Check(api_.GetDimensions(info, tensor->shape.data(), rank),
                            "GetDimensions");
  }
  api_.ReleaseTensorTypeAndShapeInfo(info);
  if (!status.ok()) return status;
  tensor->dtype = DataTypeOfOrtElement(element);  // Scatter checks it against the config's
  int64_t elements = 0;
  if (tensor->dtype == DataType::kBytes || tensor->dtype == DataType::kInvalid ||
      !ElementCount(tensor->shape, 0, &elements)) {
    return Status::Internal("output '" + output.name + "': ONNX Runtime returned a tensor of "
                            "element type " + std::to_string(element) + " and shape " +
                            ShapeToString(tensor->shape) + ", which the engine cannot hand on");
  }
  const size_t bytes = static_cast<size_t>(elements) * ElementSize(tensor->dtype);
  if (bytes == 0) {
    // An empty tensor may have no data address; every core buffer has one. The OrtValue stays
    // in *slot and is released with the batch's.
    tensor->buffer = AlignedBuffer::Create(0);
    if (tensor->buffer == nullptr) return Status::Internal("out of memory");
    return Status::Ok();
  }
  void* data = nullptr;
  status = library_.Check(api_.GetTensorMutableData(value, &data), "GetTensorMutableData");
  if (!status.ok()) return status;
  tensor->buffer = std::make_shared<OrtValueBuffer>(session_->shared_library(), value, data,
                                                    bytes, keep);
  *slot = nullptr;  // the buffer owns it now
  return Status::Ok();
}

Status OrtEngine::Execute(const BatchInputs& inputs, BatchOutputs* outputs) {
  executions_.fetch_add(1, std::memory_order_relaxed);
  if (inputs.size() != input_names_.size() || outputs->size() != outputs_.size()) {
    return Status::Internal("the native ONNX Runtime engine was made for " +
                            std::to_string(input_names_.size()) + " inputs and " +
                            std::to_string(outputs_.size()) + " outputs; the batch has " +
                            std::to_string(inputs.size()) + " and " +
                            std::to_string(outputs->size()));
  }
  thread_local std::vector<ort::OrtValue*> in_scratch;
  ValueList in(api_, &in_scratch, inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const BatchTensor& tensor = inputs[i];
    const ort::OrtElementType type = OrtElementOfDataType(tensor.dtype);
    if (type == ort::kOrtUndefined) {
      return Status::Internal(std::string("input '") + input_names_[i] + "': " +
                              DataTypeName(tensor.dtype) + " is not run by the native engine");
    }
    // ONNX Runtime only reads an input; the const_cast is the C API's signature, not a write.
    Status status = library_.Check(
        api_.CreateTensorWithDataAsOrtValue(
            memory_info_, const_cast<uint8_t*>(tensor.buffer->data()), tensor.buffer->size(),
            tensor.shape.data(), tensor.shape.size(), type, &in[i]),
        "CreateTensorWithDataAsOrtValue");
    if (!status.ok()) return status;
  }
  const bool preallocate = preallocate_.load(std::memory_order_relaxed);
  Status status = RunSession(inputs, in.data(), preallocate, outputs);
  if (!status.ok() && preallocate && any_fixed_shape_) {
    // A model may declare output shapes it does not keep to (shape inference cannot check an
    // output that depends on input values): ONNX Runtime only warns when it allocates such an
    // output itself, but refuses a pre-allocated buffer of the declared shape. So before the
    // batch fails, it runs once more with every output left to ONNX Runtime; if that succeeds,
    // the declared shapes are not to be trusted and this engine stops pre-allocating. (A batch
    // that fails for another reason fails twice: only failing batches pay for this.)
    Status retry = RunSession(inputs, in.data(), false, outputs);
    if (retry.ok()) {
      preallocate_.store(false, std::memory_order_relaxed);
      return retry;
    }
  }
  return status;
}

// One Run of the session over the wrapped inputs `in`; `preallocate`: outputs of fixed shape
// go into buffers allocated here (else ONNX Runtime allocates every output).
Status OrtEngine::RunSession(const BatchInputs& inputs, ort::OrtValue* const* in,
                             bool preallocate, BatchOutputs* outputs) {
  const int64_t rows = !inputs.empty() && !inputs[0].shape.empty() ? inputs[0].shape[0] : 0;
  thread_local std::vector<ort::OrtValue*> out_scratch;
  ValueList out(api_, &out_scratch, outputs_.size());
  bool any_runtime_allocated = false;
  for (size_t j = 0; j < outputs_.size(); ++j) {
    if (preallocate && outputs_[j].fixed_shape) {
      Status status = PrepareOutput(outputs_[j], rows, &(*outputs)[j], &out[j]);
      if (!status.ok()) return status;
    } else {
      any_runtime_allocated = true;  // out[j] stays nullptr: ONNX Runtime allocates it
    }
  }

  Status status = library_.Check(
      api_.Run(session_->get(), nullptr, input_names_.data(), in, inputs.size(),
               output_names_.data(), outputs_.size(), out.data()),
      "Run");
  if (!status.ok()) return status;

  std::shared_ptr<std::vector<std::shared_ptr<Buffer>>> keep;
  if (any_runtime_allocated) {
    keep = std::make_shared<std::vector<std::shared_ptr<Buffer>>>();
    keep->reserve(inputs.size());
    for (const BatchTensor& tensor : inputs) keep->push_back(tensor.buffer);
  }
  uint64_t preallocated = 0;
  for (size_t j = 0; j < outputs_.size(); ++j) {
    if (preallocate && outputs_[j].fixed_shape) {
      ++preallocated;  // written in place; the OrtValue over it is released with `out`
      continue;
    }
    status = TakeOutput(outputs_[j], &out[j], keep, &(*outputs)[j]);
    if (!status.ok()) return status;
  }
  preallocated_.fetch_add(preallocated, std::memory_order_relaxed);
  runtime_allocated_.fetch_add(outputs_.size() - preallocated, std::memory_order_relaxed);
  return Status::Ok();
}

}  // namespace core
}  // namespace pyserver
