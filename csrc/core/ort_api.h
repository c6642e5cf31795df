// ONNX Runtime's C API: the project's own declarations of the part the core calls.
//
// Why not onnxruntime_c_api.h: pyserver must build on a machine with Python and g++ and nothing
// else, and no such machine has that header (Debian 12 has no libonnxruntime-dev; the onnxruntime
// wheel ships the library, not the header). ONNX Runtime makes this safe: its C API is one
// struct of function pointers, OrtApi, handed out by OrtGetApiBase()->GetApi(version), and that
// struct is append-only. Once a version ships, the slots it added never move or change
// signature (upstream's onnxruntime_c_api.cc static_asserts the offsets of each version's last
// slot). So a caller that knows the index and signature of each slot it uses, and asks for a
// version that has all of them, works with every later runtime.
//
// Everything here comes from the upstream header's declarations, written out again: opaque
// handle types, the few enums the core passes or reads (their values are part of the ABI), and
// OrtApi with only the slots the core calls. Slots it does not call are kept as padding, so
// that each declared slot sits at its upstream index; a static_assert below pins every index.
// Every slot declared here was in version 1 of the API (ONNX Runtime 1.0; the upstream header
// marks its end after ReleaseCustomOpDomain, index 101), so kOrtApiVersion is 1. A slot from a
// later version raises kOrtApiVersion to that version.
//
// Tests (tests/unit/test_ort_native.py) call every slot declared here against the real library.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pyserver {
namespace core {
namespace ort {

// The API version the declarations below need: the newest version among their slots.
constexpr uint32_t kOrtApiVersion = 1;

// Opaque handles: the library owns their layout; the core only passes pointers around.
struct OrtStatus;
struct OrtEnv;
struct OrtSession;
struct OrtSessionOptions;
struct OrtRunOptions;
struct OrtValue;
struct OrtMemoryInfo;
struct OrtTypeInfo;
struct OrtTensorTypeAndShapeInfo;
struct OrtAllocator;  // a struct of function pointers upstream; used here only through the API

// ONNXTensorElementDataType: ONNX's TensorProto.DataType numbers.
enum OrtElementType : int {
  kOrtUndefined = 0,
  kOrtFloat = 1,
  kOrtUint8 = 2,
  kOrtInt8 = 3,
  kOrtUint16 = 4,
  kOrtInt16 = 5,
  kOrtInt32 = 6,
  kOrtInt64 = 7,
  kOrtString = 8,
  kOrtBool = 9,
  kOrtFloat16 = 10,
  kOrtDouble = 11,
  kOrtUint32 = 12,
  kOrtUint64 = 13,
  kOrtComplex64 = 14,
  kOrtComplex128 = 15,
  kOrtBfloat16 = 16,
  // 17 and later (float8 variants, 4-bit integers) have no v2 datatype.
};

// ONNXType: what kind of value an input or output is.
enum OrtOnnxType : int {
  kOrtTypeUnknown = 0,
  kOrtTypeTensor = 1,
  kOrtTypeSequence = 2,
  kOrtTypeMap = 3,
  kOrtTypeOpaque = 4,
  kOrtTypeSparseTensor = 5,
  kOrtTypeOptional = 6,
};

// OrtErrorCode (GetErrorCode). Later versions append codes; they print as their number.
enum OrtErrorCode : int {
  kOrtOk = 0,
  kOrtFail = 1,
  kOrtInvalidArgument = 2,
  kOrtNoSuchFile = 3,
  kOrtNoModel = 4,
  kOrtEngineError = 5,
  kOrtRuntimeException = 6,
  kOrtInvalidProtobuf = 7,
  kOrtModelLoaded = 8,
  kOrtNotImplemented = 9,
  kOrtInvalidGraph = 10,
  kOrtEpFail = 11,
};

// OrtLoggingLevel (CreateEnv).
enum OrtLoggingLevel : int {
  kOrtLogVerbose = 0,
  kOrtLogInfo = 1,
  kOrtLogWarning = 2,
  kOrtLogError = 3,
  kOrtLogFatal = 4,
};

// GraphOptimizationLevel (SetSessionGraphOptimizationLevel).
enum OrtGraphOptimizationLevel : int {
  kOrtDisableAll = 0,
  kOrtEnableBasic = 1,
  kOrtEnableExtended = 2,
  kOrtEnableAll = 99,
};

// ExecutionMode (SetSessionExecutionMode).
enum OrtExecutionMode : int {
  kOrtSequential = 0,
  kOrtParallel = 1,
};

// OrtAllocatorType and OrtMemType (CreateCpuMemoryInfo).
enum OrtAllocatorType : int {
  kOrtDeviceAllocator = 0,
  kOrtArenaAllocator = 1,
};
enum OrtMemType : int {
  kOrtMemTypeDefault = 0,
};

// OrtApi: the upstream struct up to the last slot the core calls. Padding arrays stand for the
// slots in between (their upstream names in the comment); the index of each slot is in the
// comment too and pinned by the static_asserts after the struct. A status-returning call
// returns nullptr on success, or an OrtStatus* the caller must release with ReleaseStatus.
struct OrtApi {
  void* CreateStatus;                                                       // 0 (unused)
  OrtErrorCode (*GetErrorCode)(const OrtStatus* status);                    // 1
  const char* (*GetErrorMessage)(const OrtStatus* status);                  // 2
  OrtStatus* (*CreateEnv)(OrtLoggingLevel level, const char* log_id, OrtEnv** out);  // 3
  // 4-6: CreateEnvWithCustomLogger, EnableTelemetryEvents, DisableTelemetryEvents
  void* unused_4_6[3];
  OrtStatus* (*CreateSession)(const OrtEnv* env, const char* model_path,
                              const OrtSessionOptions* options, OrtSession** out);  // 7
  void* unused_8;  // 8: CreateSessionFromArray
  OrtStatus* (*Run)(OrtSession* session, const OrtRunOptions* run_options,
                    const char* const* input_names, const OrtValue* const* inputs,
                    size_t input_count, const char* const* output_names, size_t output_count,
                    OrtValue** outputs);                                    // 9
  OrtStatus* (*CreateSessionOptions)(OrtSessionOptions** out);              // 10
  // 11-12: SetOptimizedModelFilePath, CloneSessionOptions
  void* unused_11_12[2];
  OrtStatus* (*SetSessionExecutionMode)(OrtSessionOptions* options,
                                        OrtExecutionMode mode);             // 13
  // 14-22: EnableProfiling, DisableProfiling, EnableMemPattern, DisableMemPattern,
  // EnableCpuMemArena, DisableCpuMemArena, SetSessionLogId, SetSessionLogVerbosityLevel,
  // SetSessionLogSeverityLevel
  void* unused_14_22[9];
  OrtStatus* (*SetSessionGraphOptimizationLevel)(OrtSessionOptions* options,
                                                 OrtGraphOptimizationLevel level);  // 23
  OrtStatus* (*SetIntraOpNumThreads)(OrtSessionOptions* options, int threads);     // 24
  OrtStatus* (*SetInterOpNumThreads)(OrtSessionOptions* options, int threads);     // 25
  // 26-29: CreateCustomOpDomain, CustomOpDomain_Add, AddCustomOpDomain, RegisterCustomOpsLibrary
  void* unused_26_29[4];
  OrtStatus* (*SessionGetInputCount)(const OrtSession* session, size_t* out);   // 30
  OrtStatus* (*SessionGetOutputCount)(const OrtSession* session, size_t* out);  // 31
  void* unused_32;  // 32: SessionGetOverridableInitializerCount
  OrtStatus* (*SessionGetInputTypeInfo)(const OrtSession* session, size_t index,
                                        OrtTypeInfo** out);                 // 33
  OrtStatus* (*SessionGetOutputTypeInfo)(const OrtSession* session, size_t index,
                                         OrtTypeInfo** out);                // 34
  void* unused_35;  // 35: SessionGetOverridableInitializerTypeInfo
  OrtStatus* (*SessionGetInputName)(const OrtSession* session, size_t index,
                                    OrtAllocator* allocator, char** out);   // 36
  OrtStatus* (*SessionGetOutputName)(const OrtSession* session, size_t index,
                                     OrtAllocator* allocator, char** out);  // 37
  // 38-48: SessionGetOverridableInitializerName, CreateRunOptions, the RunOptions setters and
  // getters (log verbosity, log severity, tag; terminate, unset terminate),
  // CreateTensorAsOrtValue
  void* unused_38_48[11];
  OrtStatus* (*CreateTensorWithDataAsOrtValue)(const OrtMemoryInfo* info, void* data,
                                               size_t data_bytes, const int64_t* shape,
                                               size_t shape_len, OrtElementType type,
                                               OrtValue** out);             // 49
  void* unused_50;  // 50: IsTensor
  OrtStatus* (*GetTensorMutableData)(OrtValue* value, void** out);          // 51
  // 52-54: FillStringTensor, GetStringTensorDataLength, GetStringTensorContent
  void* unused_52_54[3];
  // The result belongs to type_info: never released on its own.
  OrtStatus* (*CastTypeInfoToTensorInfo)(const OrtTypeInfo* type_info,
                                         const OrtTensorTypeAndShapeInfo** out);  // 55
  OrtStatus* (*GetOnnxTypeFromTypeInfo)(const OrtTypeInfo* type_info, OrtOnnxType* out);  // 56
  // 57-59: CreateTensorTypeAndShapeInfo, SetTensorElementType, SetDimensions
  void* unused_57_59[3];
  OrtStatus* (*GetTensorElementType)(const OrtTensorTypeAndShapeInfo* info,
                                     OrtElementType* out);                  // 60
  OrtStatus* (*GetDimensionsCount)(const OrtTensorTypeAndShapeInfo* info, size_t* out);  // 61
  OrtStatus* (*GetDimensions)(const OrtTensorTypeAndShapeInfo* info, int64_t* dims,
                              size_t dims_len);                             // 62
  // 63-64: GetSymbolicDimensions, GetTensorShapeElementCount
  void* unused_63_64[2];
  OrtStatus* (*GetTensorTypeAndShape)(const OrtValue* value,
                                      OrtTensorTypeAndShapeInfo** out);     // 65
  // 66-68: GetTypeInfo, GetValueType, CreateMemoryInfo
  void* unused_66_68[3];
  OrtStatus* (*CreateCpuMemoryInfo)(OrtAllocatorType type, OrtMemType mem_type,
                                    OrtMemoryInfo** out);                   // 69
  // 70-75: CompareMemoryInfo, MemoryInfoGetName, MemoryInfoGetId, MemoryInfoGetMemType,
  // MemoryInfoGetType, AllocatorAlloc
  void* unused_70_75[6];
  OrtStatus* (*AllocatorFree)(OrtAllocator* allocator, void* p);            // 76
  void* unused_77;  // 77: AllocatorGetInfo
  OrtStatus* (*GetAllocatorWithDefaultOptions)(OrtAllocator** out);         // 78
  // 79-91: AddFreeDimensionOverride, GetValue, GetValueCount, CreateValue, CreateOpaqueValue,
  // GetOpaqueValue, three KernelInfoGetAttribute_*, four KernelContext_*
  void* unused_79_91[13];
  void (*ReleaseEnv)(OrtEnv* env);                                          // 92
  void (*ReleaseStatus)(OrtStatus* status);                                 // 93
  void (*ReleaseMemoryInfo)(OrtMemoryInfo* info);                           // 94
  void (*ReleaseSession)(OrtSession* session);                              // 95
  void (*ReleaseValue)(OrtValue* value);                                    // 96
  void* unused_97;  // 97: ReleaseRunOptions
  void (*ReleaseTypeInfo)(OrtTypeInfo* type_info);                          // 98
  void (*ReleaseTensorTypeAndShapeInfo)(OrtTensorTypeAndShapeInfo* info);   // 99
  void (*ReleaseSessionOptions)(OrtSessionOptions* options);                // 100
};

// OrtApiBase: two slots, fixed forever (upstream static_asserts its size).
struct OrtApiBase {
  const OrtApi* (*GetApi)(uint32_t version);
  const char* (*GetVersionString)();
};

// The library's one exported entry point.
using OrtGetApiBaseFn = const OrtApiBase* (*)();
constexpr const char kOrtGetApiBaseSymbol[] = "OrtGetApiBase";

// Each declared slot at its upstream index (the numbers in onnxruntime_c_api.h's order).
#define PYSERVER_ORT_SLOT(name, index) \
  static_assert(offsetof(OrtApi, name) == (index) * sizeof(void*), #name " is slot " #index)
PYSERVER_ORT_SLOT(GetErrorCode, 1);
PYSERVER_ORT_SLOT(GetErrorMessage, 2);
PYSERVER_ORT_SLOT(CreateEnv, 3);
PYSERVER_ORT_SLOT(CreateSession, 7);
PYSERVER_ORT_SLOT(Run, 9);
PYSERVER_ORT_SLOT(CreateSessionOptions, 10);
PYSERVER_ORT_SLOT(SetSessionExecutionMode, 13);
PYSERVER_ORT_SLOT(SetSessionGraphOptimizationLevel, 23);
PYSERVER_ORT_SLOT(SetIntraOpNumThreads, 24);
PYSERVER_ORT_SLOT(SetInterOpNumThreads, 25);
PYSERVER_ORT_SLOT(SessionGetInputCount, 30);
PYSERVER_ORT_SLOT(SessionGetOutputCount, 31);
PYSERVER_ORT_SLOT(SessionGetInputTypeInfo, 33);
PYSERVER_ORT_SLOT(SessionGetOutputTypeInfo, 34);
PYSERVER_ORT_SLOT(SessionGetInputName, 36);
PYSERVER_ORT_SLOT(SessionGetOutputName, 37);
PYSERVER_ORT_SLOT(CreateTensorWithDataAsOrtValue, 49);
PYSERVER_ORT_SLOT(GetTensorMutableData, 51);
PYSERVER_ORT_SLOT(CastTypeInfoToTensorInfo, 55);
PYSERVER_ORT_SLOT(GetOnnxTypeFromTypeInfo, 56);
PYSERVER_ORT_SLOT(GetTensorElementType, 60);
PYSERVER_ORT_SLOT(GetDimensionsCount, 61);
PYSERVER_ORT_SLOT(GetDimensions, 62);
PYSERVER_ORT_SLOT(GetTensorTypeAndShape, 65);
PYSERVER_ORT_SLOT(CreateCpuMemoryInfo, 69);
PYSERVER_ORT_SLOT(AllocatorFree, 76);
PYSERVER_ORT_SLOT(GetAllocatorWithDefaultOptions, 78);
PYSERVER_ORT_SLOT(ReleaseEnv, 92);
PYSERVER_ORT_SLOT(ReleaseStatus, 93);
PYSERVER_ORT_SLOT(ReleaseMemoryInfo, 94);
PYSERVER_ORT_SLOT(ReleaseSession, 95);
PYSERVER_ORT_SLOT(ReleaseValue, 96);
PYSERVER_ORT_SLOT(ReleaseTypeInfo, 98);
PYSERVER_ORT_SLOT(ReleaseTensorTypeAndShapeInfo, 99);
PYSERVER_ORT_SLOT(ReleaseSessionOptions, 100);
#undef PYSERVER_ORT_SLOT
static_assert(sizeof(OrtApiBase) == 2 * sizeof(void*), "OrtApiBase has two slots");

}  // namespace ort
}  // namespace core
}  // namespace pyserver
