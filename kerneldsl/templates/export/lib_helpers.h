/* kerneldsl export: the entry points' generic checks (host code, C and C++). */
#define KD_ERR_SHAPE (-1)
#define KD_ERR_NEGATIVE (-2)
#define KD_ERR_NULL (-3)
#define KD_ERR_ALIAS (-4)
#define KD_ERR_ALLOC (-5)
#define KD_ERR_CUDA (-6)
#define KD_ERR_SIZE (-7)
#ifndef KD_UNUSED
#define KD_UNUSED __attribute__((unused))
#endif
{% if cuda %}
#define KD_ALIGN 256  /* every intermediate starts on a 256-byte boundary of the workspace */
{% else %}
#define KD_ALIGN 64
{% endif %}

/* Saturating int64 arithmetic on sizes: an absurd size fails an allocation, never wraps. */
static KD_UNUSED int64_t kd_lib_add(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}
static KD_UNUSED int64_t kd_lib_mul(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}
static KD_UNUSED int64_t kd_lib_round(int64_t bytes)  /* up to a multiple of KD_ALIGN */
{
    return kd_lib_add(bytes, KD_ALIGN - 1) / KD_ALIGN * KD_ALIGN;
}

/* Elements of a shape (saturating). */
static KD_UNUSED int64_t kd_lib_count(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n = kd_lib_mul(n, shape[d]);
    return n;
}

/* The bytes an array spans (its elements, or its strides' reach, times the item size) do not fit
   in int64: no pointer can address it, and index arithmetic on it would wrap. */
static KD_UNUSED int kd_lib_too_big(int ndim, const int64_t *shape, const int64_t *st, int isz)
{
    int64_t reach = 1;
    for (int d = 0; d < ndim; ++d) {
        if (shape[d] == 0) return 0;
        const int64_t s = st[d] < 0 ? (st[d] == INT64_MIN ? INT64_MAX : -st[d]) : st[d];
        reach = kd_lib_add(reach, kd_lib_mul(s, shape[d] - 1));
    }
    return kd_lib_mul(kd_lib_count(ndim, shape), isz) == INT64_MAX
        || kd_lib_mul(reach, isz) == INT64_MAX;
}

/* A shape given by the caller differs from the bound one. */
static KD_UNUSED int kd_lib_differ(int ndim, const int64_t *given, const int64_t *bound)
{
    for (int d = 0; d < ndim; ++d)
        if (!given || given[d] != bound[d]) return 1;
    return 0;
}

/* Strides in elements: the given ones, or row-major (C order); zeros for an empty array, whose
   pointer is the dummy (a failed check reads element 0, whatever the indices). */
static KD_UNUSED void kd_lib_strides(int ndim, const int64_t *shape, const int64_t *given, int64_t count,
                                     int64_t *out)
{
    int64_t acc = 1;
    for (int d = ndim - 1; d >= 0; --d) {
        out[d] = count == 0 ? 0 : given ? given[d] : acc;
        acc = kd_lib_mul(acc, shape[d] > 1 ? shape[d] : 1);
    }
}

/* The bytes [lo, hi) an array's elements lie in. */
static KD_UNUSED void kd_lib_span(const void *p, int ndim, const int64_t *shape, const int64_t *st, int isz,
                                  intptr_t *lo, intptr_t *hi)
{
    intptr_t a = (intptr_t)p, b = (intptr_t)p + isz;
    for (int d = 0; d < ndim; ++d) {
        const intptr_t step = (intptr_t)kd_lib_mul(st[d] < 0 ? -st[d] : st[d], shape[d] - 1) * isz;
        if (st[d] < 0) a -= step; else b += step;
    }
    *lo = a;
    *hi = b;
}

/* Two arrays' byte ranges meet (conservative: interleaved views that share no element count too). */
static KD_UNUSED int kd_lib_overlap(const void *p, int pn, const int64_t *ps, const int64_t *pst, int pisz,
                                    const void *q, int qn, const int64_t *qs, const int64_t *qst, int qisz)
{
    if (!kd_lib_count(pn, ps) || !kd_lib_count(qn, qs)) return 0;
    intptr_t plo, phi, qlo, qhi;
    kd_lib_span(p, pn, ps, pst, pisz, &plo, &phi);
    kd_lib_span(q, qn, qs, qst, qisz, &qlo, &qhi);
    return plo < qhi && qlo < phi;
}

/* Two elements of one array share memory (a zero or overlapping stride), as runtime/callable.py's
   self_overlapping: strides sorted by size, each must step past the dimensions inside it. */
static KD_UNUSED int kd_lib_self_overlap(int ndim, const int64_t *shape, const int64_t *st, int isz)
{
    int64_t s[64], n[64];
    int k = 0;
    if (ndim > 64) return 1;
    for (int d = 0; d < ndim; ++d) {
        if (shape[d] <= 1) continue;
        int64_t a = (st[d] < 0 ? -st[d] : st[d]) * isz;
        int j = k++;
        while (j > 0 && s[j - 1] > a) { s[j] = s[j - 1]; n[j] = n[j - 1]; --j; }
        s[j] = a;
        n[j] = shape[d];
    }
    int64_t span = isz;
    for (int j = 0; j < k; ++j) {
        if (s[j] < span) return 1;
        span = kd_lib_add(kd_lib_mul(s[j], n[j] - 1), span);
    }
    return 0;
}

static KD_UNUSED void *kd_lib_alloc(int64_t bytes)
{
    if (bytes <= 0 || bytes >= INT64_MAX / 2) return 0;
    return aligned_alloc(KD_ALIGN, (size_t)kd_lib_round(bytes));
}
static KD_UNUSED void kd_lib_free(void *p) { free(p); }
{% if cuda %}

/* Device memory and launches: the CUDA runtime, or the emulator's host memory. */
#ifdef KD_CUDA_EMU
#define KD_LAUNCH(kernel, grid, block, stream, ...) \
    do { if (kd_emu::launch(kernel, dim3((unsigned)(grid)), dim3((unsigned)(block)), __VA_ARGS__)) return KD_ERR_CUDA; } while (0)
static int kd_dev_alloc(void **p, size_t n, cudaStream_t) { *p = kd_lib_alloc((int64_t)n); return *p ? 0 : 2; }
static void kd_dev_free(void *p, cudaStream_t) { kd_lib_free(p); }
static int kd_dev_zero(void *p, size_t n, cudaStream_t) { memset(p, 0, n); return 0; }
static KD_UNUSED int kd_dev_to_host(void *dst, const void *src, size_t n, cudaStream_t) { memcpy(dst, src, n); return 0; }
static int kd_dev_last_error() { return 0; }
#else
#define KD_LAUNCH(kernel, grid, block, stream, ...) \
    do { kernel<<<(unsigned)(grid), (unsigned)(block), 0, stream>>>(__VA_ARGS__); \
         if (cudaPeekAtLastError() != cudaSuccess) return KD_ERR_CUDA; } while (0)
static int kd_dev_alloc(void **p, size_t n, cudaStream_t s) { return (int)cudaMallocAsync(p, n, s); }
static void kd_dev_free(void *p, cudaStream_t s) { cudaFreeAsync(p, s); }
static int kd_dev_zero(void *p, size_t n, cudaStream_t s) { return (int)cudaMemsetAsync(p, 0, n, s); }
static KD_UNUSED int kd_dev_to_host(void *dst, const void *src, size_t n, cudaStream_t s)
{
    cudaError_t e = cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    return (int)e;
}
static int kd_dev_last_error() { return (int)cudaGetLastError(); }
#endif
{% endif %}
