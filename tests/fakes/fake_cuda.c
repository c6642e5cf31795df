/* A fake CUDA driver for tests on machines without a GPU (built by tests/fakes/cuda.py).
 *
 * It exports the driver API symbols pyserver's core loads (csrc/core/cuda_driver.cc) and keeps
 * the driver's rules that the core must follow: memory, stream and copy calls fail with
 * CUDA_ERROR_INVALID_CONTEXT unless a context is current on the calling thread, and streams
 * must be live. "Device" memory is host memory, so a fake engine can read and write it, and
 * copies are done at once (an asynchronous call may complete early). It counts every call, and
 * a test can make the next call of a given name fail with a given code.
 */
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct { char bytes[16]; } CUuuid;
struct CUctx_st { int device; };
struct CUstream_st { int device; int live; unsigned flags; struct CUstream_st* next; };
struct CUevent_st { double recorded_ms; int recorded; };

enum { kMaxDevices = 8 };
enum {
  CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3, CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_CONTEXT = 201, CUDA_ERROR_INVALID_HANDLE = 400,
};

/* Counters, in the order fake_cuda_counter_names lists them. */
enum {
  C_INIT, C_RETAIN, C_RELEASE, C_SET_CURRENT, C_STREAM_CREATE, C_STREAM_DESTROY, C_SYNC,
  C_MEM_ALLOC, C_MEM_FREE, C_HOST_ALLOC, C_HOST_FREE, C_HTOD, C_HTOD_BYTES, C_DTOH,
  C_DTOH_BYTES, C_DEVICE_BYTES, C_SYNC_DEFAULT, C_EVENT_CREATE, C_EVENT_DESTROY, C_EVENT_RECORD,
  C_COUNT
};
static const char* kCounterNames =
    "init,retain,release,set_current,stream_create,stream_destroy,sync,mem_alloc,mem_free,"
    "host_alloc,host_free,htod,htod_bytes,dtoh,dtoh_bytes,device_bytes,sync_default,"
    "event_create,event_destroy,event_record";

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static long long g_counters[C_COUNT];
static int g_devices = 2;
static int g_initialized = 0;
/* Constant: read without the lock by the threads that have one current. */
static struct CUctx_st g_contexts[kMaxDevices] = {{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}};
static int g_retained[kMaxDevices];
static char g_fail_call[64];
static CUresult g_fail_code = 0;
static __thread struct CUctx_st* t_current = NULL;
/* Every stream ever made, destroyed ones too (kept so that a use after destroy is seen as such):
 * reachable from here, so leak checkers do not count them. */
static struct CUstream_st* g_streams = NULL;

static void count(int which, long long n) {
  pthread_mutex_lock(&g_mu);
  g_counters[which] += n;
  pthread_mutex_unlock(&g_mu);
}

/* The injected failure for `call`, once; else CUDA_SUCCESS. */
static CUresult injected(const char* call) {
  CUresult code = CUDA_SUCCESS;
  pthread_mutex_lock(&g_mu);
  if (g_fail_code != 0 && strcmp(g_fail_call, call) == 0) {
    code = g_fail_code;
    g_fail_code = 0;
  }
  pthread_mutex_unlock(&g_mu);
  return code;
}

static CUresult need_context(void) {
  if (!g_initialized) return CUDA_ERROR_NOT_INITIALIZED;
  return t_current == NULL ? CUDA_ERROR_INVALID_CONTEXT : CUDA_SUCCESS;
}

/* --- test controls -------------------------------------------------------------------------- */
const char* fake_cuda_counter_names(void) { return kCounterNames; }
void fake_cuda_counters(long long* out) {
  pthread_mutex_lock(&g_mu);
  memcpy(out, g_counters, sizeof(g_counters));
  pthread_mutex_unlock(&g_mu);
}
void fake_cuda_reset(int devices) {
  pthread_mutex_lock(&g_mu);
  memset(g_counters, 0, sizeof(g_counters));
  g_devices = devices < 0 ? 0 : devices > kMaxDevices ? kMaxDevices : devices;
  g_fail_code = 0;
  pthread_mutex_unlock(&g_mu);
}
void fake_cuda_fail_next(const char* call, int code) {
  pthread_mutex_lock(&g_mu);
  strncpy(g_fail_call, call, sizeof(g_fail_call) - 1);
  g_fail_code = code;
  pthread_mutex_unlock(&g_mu);
}

/* --- the driver API ------------------------------------------------------------------------- */
CUresult cuInit(unsigned flags) {
  (void)flags;
  count(C_INIT, 1);
  g_initialized = 1;
  return injected("cuInit");
}
CUresult cuDriverGetVersion(int* version) { *version = 13000; return CUDA_SUCCESS; }
CUresult cuGetErrorName(CUresult error, const char** name) {
  switch (error) {
    case CUDA_SUCCESS: *name = "CUDA_SUCCESS"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_VALUE: *name = "CUDA_ERROR_INVALID_VALUE"; return CUDA_SUCCESS;
    case CUDA_ERROR_OUT_OF_MEMORY: *name = "CUDA_ERROR_OUT_OF_MEMORY"; return CUDA_SUCCESS;
    case CUDA_ERROR_NOT_INITIALIZED: *name = "CUDA_ERROR_NOT_INITIALIZED"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_DEVICE: *name = "CUDA_ERROR_INVALID_DEVICE"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_CONTEXT: *name = "CUDA_ERROR_INVALID_CONTEXT"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_HANDLE: *name = "CUDA_ERROR_INVALID_HANDLE"; return CUDA_SUCCESS;
    default: *name = NULL; return CUDA_ERROR_INVALID_VALUE;
  }
}
CUresult cuGetErrorString(CUresult error, const char** text) {
  switch (error) {
    case CUDA_ERROR_OUT_OF_MEMORY: *text = "out of memory"; return CUDA_SUCCESS;
    case CUDA_ERROR_INVALID_CONTEXT: *text = "invalid device context"; return CUDA_SUCCESS;
    default: return cuGetErrorName(error, text);
  }
}
CUresult cuDeviceGetCount(int* n) { *n = g_devices; return CUDA_SUCCESS; }
CUresult cuDeviceGet(CUdevice* device, int ordinal) {
  if (ordinal < 0 || ordinal >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  *device = ordinal;
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetName(char* name, int len, CUdevice device) {
  if (device < 0 || device >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  char text[32] = "Fake GPU 0";
  text[9] = (char)('0' + device);
  strncpy(name, text, (size_t)len);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid_v2(CUuuid* uuid, CUdevice device) {
  if (device < 0 || device >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  memset(uuid->bytes, 0, sizeof(uuid->bytes));
  uuid->bytes[15] = (char)(device + 1);
  return CUDA_SUCCESS;
}
CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice device) {
  if (device < 0 || device >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = (size_t)16 << 30;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(struct CUctx_st** context, CUdevice device) {
  if (device < 0 || device >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  count(C_RETAIN, 1);
  pthread_mutex_lock(&g_mu);
  ++g_retained[device];
  pthread_mutex_unlock(&g_mu);
  *context = &g_contexts[device];
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRelease_v2(CUdevice device) {
  if (device < 0 || device >= g_devices) return CUDA_ERROR_INVALID_DEVICE;
  count(C_RELEASE, 1);
  pthread_mutex_lock(&g_mu);
  CUresult result = g_retained[device] > 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_CONTEXT;
  if (g_retained[device] > 0) --g_retained[device];
  pthread_mutex_unlock(&g_mu);
  return result;
}
CUresult cuCtxSetCurrent(struct CUctx_st* context) {
  count(C_SET_CURRENT, 1);
  t_current = context;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetCurrent(struct CUctx_st** context) {
  *context = t_current;
  return CUDA_SUCCESS;
}
CUresult cuCtxGetDevice(CUdevice* device) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  *device = t_current->device;
  return CUDA_SUCCESS;
}
CUresult cuStreamCreate(struct CUstream_st** stream, unsigned flags) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if ((r = injected("cuStreamCreate")) != CUDA_SUCCESS) return r;
  struct CUstream_st* s = (struct CUstream_st*)malloc(sizeof(*s));
  s->device = t_current->device;
  s->live = 1;
  s->flags = flags;
  pthread_mutex_lock(&g_mu);
  s->next = g_streams;
  g_streams = s;
  pthread_mutex_unlock(&g_mu);
  *stream = s;
  count(C_STREAM_CREATE, 1);
  return CUDA_SUCCESS;
}
CUresult cuStreamDestroy_v2(struct CUstream_st* stream) {
  if (stream == NULL || !stream->live) return CUDA_ERROR_INVALID_HANDLE;
  stream->live = 0;  /* kept, so that a use after destroy is seen as such */
  count(C_STREAM_DESTROY, 1);
  return CUDA_SUCCESS;
}
/* The legacy (0x1) and per-thread (0x2) default streams are the driver's own handles. */
static int default_stream(const struct CUstream_st* stream) {
  return stream == (const struct CUstream_st*)0x1 || stream == (const struct CUstream_st*)0x2;
}
CUresult cuStreamSynchronize(struct CUstream_st* stream) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if (default_stream(stream)) {
    count(C_SYNC_DEFAULT, 1);
    return CUDA_SUCCESS;
  }
  if (stream == NULL || !stream->live) return CUDA_ERROR_INVALID_HANDLE;
  count(C_SYNC, 1);
  return injected("cuStreamSynchronize");
}
/* Events: the fake's work is done when it is enqueued, so an event completes when recorded. */
CUresult cuEventCreate(struct CUevent_st** event, unsigned flags) {
  (void)flags;
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if ((r = injected("cuEventCreate")) != CUDA_SUCCESS) return r;
  *event = (struct CUevent_st*)calloc(1, sizeof(**event));
  count(C_EVENT_CREATE, 1);
  return CUDA_SUCCESS;
}
CUresult cuEventDestroy_v2(struct CUevent_st* event) {
  if (event == NULL) return CUDA_ERROR_INVALID_HANDLE;
  free(event);
  count(C_EVENT_DESTROY, 1);
  return CUDA_SUCCESS;
}
CUresult cuEventRecord(struct CUevent_st* event, struct CUstream_st* stream) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if (event == NULL || stream == NULL || !stream->live) return CUDA_ERROR_INVALID_HANDLE;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  event->recorded_ms = now.tv_sec * 1e3 + now.tv_nsec / 1e6;
  event->recorded = 1;
  count(C_EVENT_RECORD, 1);
  return CUDA_SUCCESS;
}
CUresult cuEventElapsedTime(float* ms, struct CUevent_st* start, struct CUevent_st* end) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if (start == NULL || end == NULL || !start->recorded || !end->recorded) {
    return CUDA_ERROR_INVALID_HANDLE;
  }
  *ms = (float)(end->recorded_ms - start->recorded_ms);
  return CUDA_SUCCESS;
}
CUresult cuMemAlloc_v2(CUdeviceptr* ptr, size_t bytes) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if ((r = injected("cuMemAlloc_v2")) != CUDA_SUCCESS) return r;
  if (bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  /* The size lives in front of the block, for the device_bytes counter. */
  size_t* block = (size_t*)aligned_alloc(256, 256 + ((bytes + 255) / 256) * 256);
  if (block == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  block[0] = bytes;
  *ptr = (CUdeviceptr)((char*)block + 256);
  count(C_MEM_ALLOC, 1);
  count(C_DEVICE_BYTES, (long long)bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemFree_v2(CUdeviceptr ptr) {
  if (ptr == 0) return CUDA_ERROR_INVALID_VALUE;
  size_t* block = (size_t*)((char*)ptr - 256);
  count(C_DEVICE_BYTES, -(long long)block[0]);
  count(C_MEM_FREE, 1);
  free(block);
  return CUDA_SUCCESS;
}
CUresult cuMemHostAlloc(void** ptr, size_t bytes, unsigned flags) {
  (void)flags;
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if ((r = injected("cuMemHostAlloc")) != CUDA_SUCCESS) return r;
  *ptr = aligned_alloc(4096, ((bytes + 4095) / 4096) * 4096);
  if (*ptr == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  count(C_HOST_ALLOC, 1);
  return CUDA_SUCCESS;
}
CUresult cuMemFreeHost(void* ptr) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  count(C_HOST_FREE, 1);
  free(ptr);
  return CUDA_SUCCESS;
}
CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes,
                              struct CUstream_st* stream) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if (stream == NULL || !stream->live || stream->device != t_current->device) {
    return CUDA_ERROR_INVALID_HANDLE;
  }
  if ((r = injected("cuMemcpyHtoDAsync_v2")) != CUDA_SUCCESS) return r;
  memcpy((void*)dst, src, bytes);
  count(C_HTOD, 1);
  count(C_HTOD_BYTES, (long long)bytes);
  return CUDA_SUCCESS;
}
CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes,
                              struct CUstream_st* stream) {
  CUresult r = need_context();
  if (r != CUDA_SUCCESS) return r;
  if (stream == NULL || !stream->live || stream->device != t_current->device) {
    return CUDA_ERROR_INVALID_HANDLE;
  }
  if ((r = injected("cuMemcpyDtoHAsync_v2")) != CUDA_SUCCESS) return r;
  memcpy(dst, (const void*)src, bytes);
  count(C_DTOH, 1);
  count(C_DTOH_BYTES, (long long)bytes);
  return CUDA_SUCCESS;
}
