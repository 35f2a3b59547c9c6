/* A stand-in for the NVIDIA driver (libcuda) and NVRTC with just the functions vggq's CUDA probe calls,
 * each answering what the FAKE_* environment variables say. Built by tests/device.rs. */
#include <stdlib.h>
#include <string.h>

static int env_int(const char *name, int fallback) {
    const char *value = getenv(name);
    return value ? atoi(value) : fallback;
}

#ifdef FAKE_DRIVER
int cuInit(unsigned int flags) { (void)flags; return env_int("FAKE_CUINIT_RESULT", 0); }
int cuDriverGetVersion(int *version) { *version = env_int("FAKE_CUDA_VERSION", 13000); return 0; }
int cuDeviceGetCount(int *count) { *count = env_int("FAKE_CUDA_DEVICES", 1); return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return 0; }
int cuDeviceGetName(char *name, int length, int device) {
    (void)device;
    strncpy(name, "Fake GPU", (size_t)length);
    return 0;
}
int cuDeviceTotalMem_v2(size_t *bytes, int device) { (void)device; *bytes = (size_t)80 << 30; return 0; }
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    (void)device;
    *value = attribute == 75 ? 9 : 0; /* compute capability 9.0 */
    return 0;
}
int cuGetErrorName(int error, const char **name) {
    *name = error == 100 ? "CUDA_ERROR_NO_DEVICE" : "CUDA_ERROR_UNKNOWN";
    return 0;
}
#endif

#ifdef FAKE_NVRTC
int nvrtcVersion(int *major, int *minor) {
    int version = env_int("FAKE_NVRTC_VERSION", 13000);
    *major = version / 1000;
    *minor = version % 1000 / 10;
    return 0;
}
#endif
