/*
 * A plain driver-API client, linked with -lcuda against the emulator's
 * libcuda.so. It loads the PTX file named by argv[1] (kernels vec_add,
 * block_sum, write_past_end), runs them, checks every answer here in C, and
 * checks the error paths a driver must report. Prints "PASS <check>" per
 * check; exits non-zero at the first failure.
 *
 * It also runs on a real driver: the emulator's own exports are looked up
 * with dlsym, and the checks that only the emulator can make (counters, an
 * out-of-bounds write a few bytes past an allocation) are skipped there.
 */
#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*is_emulator_fn)(void);
typedef size_t (*counters_json_fn)(char *buf, size_t len);

/* The emulator's extra exports, or NULL on a real driver. */
static is_emulator_fn ptx_emu_is_emulator;
static counters_json_fn ptx_emu_counters_json;

static int on_emulator(void) { return ptx_emu_is_emulator != NULL && ptx_emu_is_emulator() == 1; }

static void expect_code(CUresult got, CUresult want, const char *what, int line) {
    if (got != want) {
        const char *name = NULL;
        cuGetErrorName(got, &name);
        fprintf(stderr, "FAIL line %d: %s returned %d (%s), expected %d\n", line, what, (int)got,
                name ? name : "?", (int)want);
        exit(1);
    }
}
#define EXPECT(call, want) expect_code((call), (want), #call, __LINE__)
#define CHECK(call) EXPECT(call, CUDA_SUCCESS)

static void require(int ok, const char *what, int line) {
    if (!ok) {
        fprintf(stderr, "FAIL line %d: %s\n", line, what);
        exit(1);
    }
}
#define REQUIRE(cond) require((cond), #cond, __LINE__)

static char *read_file(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) return NULL;
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (fread(text, 1, (size_t)size, file) != (size_t)size) { fclose(file); free(text); return NULL; }
    text[size] = '\0';
    fclose(file);
    return text;
}

/* A fixed-seed generator: the same data on every run. */
static unsigned int lcg_state = 12345u;
static unsigned int lcg(void) { lcg_state = lcg_state * 1664525u + 1013904223u; return lcg_state >> 8; }

static void check_device_and_errors(void) {
    int version = 0, count = 0, major = 0, minor = 0, sms = 0;
    CUdevice device;
    char name[64];
    const char *text = NULL;

    EXPECT(cuDeviceGetCount(&count), CUDA_ERROR_NOT_INITIALIZED);
    CHECK(cuInit(0));
    CHECK(cuDriverGetVersion(&version));
    REQUIRE(version == 13000);
    CHECK(cuDeviceGetCount(&count));
    REQUIRE(count == 1);
    CHECK(cuDeviceGet(&device, 0));
    EXPECT(cuDeviceGet(&device, 1), CUDA_ERROR_INVALID_DEVICE);
    CHECK(cuDeviceGetName(name, sizeof name, device));
    REQUIRE(strlen(name) > 0);
    CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, device));
    CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, device));
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, device));
    REQUIRE(major == 8 && minor == 0 && sms == 108);
    EXPECT(cuDeviceGetAttribute(&major, (CUdevice_attribute)100000, device), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuDeviceGetAttribute(NULL, CU_DEVICE_ATTRIBUTE_WARP_SIZE, device), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGetErrorName(CUDA_ERROR_ILLEGAL_ADDRESS, &text));
    REQUIRE(strcmp(text, "CUDA_ERROR_ILLEGAL_ADDRESS") == 0);
    printf("PASS device\n");
}

static void check_bad_images(void) {
    CUmodule module;
    static const unsigned char elf[] = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static const unsigned int fatbin[] = {0xBA55ED50u, 0x00100001u, 0, 0};
    EXPECT(cuModuleLoadData(&module, elf), CUDA_ERROR_INVALID_IMAGE);
    EXPECT(cuModuleLoadData(&module, fatbin), CUDA_ERROR_INVALID_IMAGE);
    EXPECT(cuModuleLoadData(&module, "this is not PTX"), CUDA_ERROR_INVALID_IMAGE);
    EXPECT(cuModuleLoadData(&module, NULL), CUDA_ERROR_INVALID_VALUE);
    printf("PASS bad_image\n");
}

static void check_vec_add(CUmodule module) {
    enum { N = 1000 };
    static float a[N], b[N], c[N];
    CUfunction vec_add;
    CUdeviceptr da, db, dc;
    int n = N;
    for (int i = 0; i < N; i++) { a[i] = (float)(lcg() % 1000) / 8.0f; b[i] = (float)(lcg() % 1000) / 16.0f; }

    CHECK(cuModuleGetFunction(&vec_add, module, "vec_add"));
    EXPECT(cuModuleGetFunction(&vec_add, module, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
    CHECK(cuModuleGetFunction(&vec_add, module, "vec_add"));
    CHECK(cuMemAlloc(&da, sizeof a));
    CHECK(cuMemAlloc(&db, sizeof b));
    CHECK(cuMemAlloc(&dc, sizeof c));
    CHECK(cuMemcpyHtoD(da, a, sizeof a));
    CHECK(cuMemcpyHtoD(db, b, sizeof b));
    CHECK(cuMemsetD32(dc, 0xffffffffu, N));

    void *params[] = {&da, &db, &dc, &n};
    CHECK(cuLaunchKernel(vec_add, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL));
    CHECK(cuCtxSynchronize());
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    for (int i = 0; i < N; i++) REQUIRE(c[i] == a[i] + b[i]);

    if (on_emulator()) {
        char json[4096];
        size_t needed = ptx_emu_counters_json(json, sizeof json);
        REQUIRE(needed > 0 && needed < sizeof json);
        REQUIRE(strstr(json, "vec_add") != NULL);
    }

    /* The same launch through `extra`: a packed buffer, 8-byte aligned pointers then the int. */
    struct { CUdeviceptr a, b, c; int n; } packed = {db, da, dc, N};
    size_t packed_size = 28;
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size,
                     CU_LAUNCH_PARAM_END};
    CHECK(cuMemsetD8(dc, 0, sizeof c));
    CHECK(cuLaunchKernel(vec_add, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra));
    CHECK(cuMemcpyDtoH(c, dc, sizeof c));
    for (int i = 0; i < N; i++) REQUIRE(c[i] == b[i] + a[i]);

    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    EXPECT(cuMemFree(dc), CUDA_ERROR_INVALID_VALUE);
    printf("PASS vec_add\n");
}

static void check_block_sum(CUmodule module) {
    enum { N = 5000, BLOCK = 256, BLOCKS = (N + BLOCK - 1) / BLOCK };
    static int input[N], sums[BLOCKS], expected[BLOCKS];
    CUfunction block_sum;
    CUdeviceptr din, dsums;
    CUstream stream;
    CUevent start, stop;
    int n = N, max_dynamic = 0;
    float ms = -1.0f;
    for (int i = 0; i < N; i++) input[i] = (int)(lcg() % 2001) - 1000;
    for (int i = 0; i < N; i++) expected[i / BLOCK] += input[i];

    CHECK(cuModuleGetFunction(&block_sum, module, "block_sum"));
    CHECK(cuMemAlloc(&din, sizeof input));
    CHECK(cuMemAlloc(&dsums, sizeof sums));
    CHECK(cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING));
    CHECK(cuEventCreate(&start, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&stop, CU_EVENT_DEFAULT));
    CHECK(cuMemcpyHtoDAsync(din, input, sizeof input, stream));

    void *params[] = {&din, &dsums, &n};
    CHECK(cuEventRecord(start, stream));
    CHECK(cuLaunchKernel(block_sum, BLOCKS, 1, 1, BLOCK, 1, 1, BLOCK * sizeof(int), stream, params, NULL));
    CHECK(cuEventRecord(stop, stream));
    CHECK(cuMemcpyDtoHAsync(sums, dsums, sizeof sums, stream));
    CHECK(cuStreamSynchronize(stream));
    CHECK(cuEventSynchronize(stop));
    CHECK(cuEventElapsedTime(&ms, start, stop));
    REQUIRE(ms >= 0.0f);
    for (int block = 0; block < BLOCKS; block++) REQUIRE(sums[block] == expected[block]);

    /* More than 48 KB of dynamic shared memory needs an explicit opt-in. */
    unsigned int big = 64 * 1024;
    EXPECT(cuLaunchKernel(block_sum, BLOCKS, 1, 1, BLOCK, 1, 1, big, stream, params, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuFuncSetAttribute(block_sum, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 200 * 1024),
           CUDA_ERROR_INVALID_VALUE);
    CHECK(cuFuncSetAttribute(block_sum, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)big));
    CHECK(cuFuncGetAttribute(&max_dynamic, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, block_sum));
    REQUIRE(max_dynamic == (int)big);
    CHECK(cuMemsetD8Async(dsums, 0, sizeof sums, stream));
    CHECK(cuLaunchKernel(block_sum, BLOCKS, 1, 1, BLOCK, 1, 1, big, stream, params, NULL));
    CHECK(cuMemcpyDtoH(sums, dsums, sizeof sums));
    for (int block = 0; block < BLOCKS; block++) REQUIRE(sums[block] == expected[block]);

    CHECK(cuEventDestroy(start));
    CHECK(cuEventDestroy(stop));
    CHECK(cuStreamDestroy(stream));
    CHECK(cuMemFree(din));
    CHECK(cuMemFree(dsums));
    printf("PASS block_sum\n");
}

static void check_out_of_bounds(CUmodule module) {
    enum { N = 64 };
    if (!on_emulator()) {
        /* A GPU maps memory in large pages: 256 bytes past a small
           allocation is usually mapped, so the write need not fault. */
        printf("SKIP out_of_bounds (real driver)\n");
        return;
    }
    CUfunction write_past_end;
    CUdeviceptr out;
    int n = N;
    CHECK(cuModuleGetFunction(&write_past_end, module, "write_past_end"));
    CHECK(cuMemAlloc(&out, N * sizeof(float)));
    void *params[] = {&out, &n};
    /* 128 threads write out[0..128) into a 64-float allocation. */
    EXPECT(cuLaunchKernel(write_past_end, 1, 1, 1, 128, 1, 1, 0, NULL, params, NULL), CUDA_ERROR_ILLEGAL_ADDRESS);
    /* Sticky, as on hardware. */
    EXPECT(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    printf("PASS out_of_bounds\n");
}

int main(int argc, char **argv) {
    CUdevice device;
    CUcontext context, current;
    CUmodule module;
    if (argc != 2) { fprintf(stderr, "usage: %s kernels.ptx\n", argv[0]); return 2; }
    char *ptx = read_file(argv[1]);
    REQUIRE(ptx != NULL);
    ptx_emu_is_emulator = (is_emulator_fn)dlsym(RTLD_DEFAULT, "ptxEmuIsEmulator");
    ptx_emu_counters_json = (counters_json_fn)dlsym(RTLD_DEFAULT, "ptxEmuGetLastLaunchCountersJson");
    printf("driver: %s\n", on_emulator() ? "emulator" : "real");

    check_device_and_errors();
    CHECK(cuDeviceGet(&device, 0));
    CHECK(cuDevicePrimaryCtxRetain(&context, device));
    CHECK(cuCtxSetCurrent(context));
    CHECK(cuCtxGetCurrent(&current));
    REQUIRE(current == context);

    check_bad_images();
    CHECK(cuModuleLoadData(&module, ptx));
    check_vec_add(module);
    check_block_sum(module);
    check_out_of_bounds(module);

    CHECK(cuDevicePrimaryCtxRelease(device));
    free(ptx);
    printf("ALL PASSED\n");
    return 0;
}
