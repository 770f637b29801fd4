/* kerneldsl C prelude: numpy's semantics for the operations C spells differently. */
#include <stdint.h>
#include <stdbool.h>
#include <math.h>

#define KD_UNUSED __attribute__((unused))

/* Every multiply and add rounds on its own, as numpy's do (`x*y - x*y` is 0): the default flags
   carry -ffp-contract=off; contraction kernels use explicit fused multiply-adds where they want them. */
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#ifdef KD_USE_MVEC
/* glibc's libmvec has SIMD versions of these; declaring them lets `omp simd` loops call them. */
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
float log1pf(float);
#pragma omp declare simd notinbranch
float expm1f(float);
#pragma omp declare simd notinbranch
float tanhf(float);
#pragma omp declare simd notinbranch
float sinf(float);
#pragma omp declare simd notinbranch
float cosf(float);
#pragma omp declare simd notinbranch
float erff(float);
#pragma omp declare simd notinbranch
float powf(float, float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log(double);
#pragma omp declare simd notinbranch
double log1p(double);
#pragma omp declare simd notinbranch
double expm1(double);
#pragma omp declare simd notinbranch
double tanh(double);
#pragma omp declare simd notinbranch
double sin(double);
#pragma omp declare simd notinbranch
double cos(double);
#pragma omp declare simd notinbranch
double erf(double);
#pragma omp declare simd notinbranch
double pow(double, double);
#endif

/* A run-time checked index: out of [0, n) records the code and the index in `report`
   (report[0] = code, report[1] = index) and reads element 0 instead. */
static inline int64_t kd_chk(int64_t i, int64_t n, int code, int64_t *report)
{
    if (__builtin_expect((uint64_t)i >= (uint64_t)n, 0)) {
        __atomic_store_n(&report[1], i, __ATOMIC_RELAXED);
        __atomic_store_n(&report[0], (int64_t)code, __ATOMIC_RELEASE);
        return 0;
    }
    return i;
}

/* Saturating int64 arithmetic for entry checks: an overflowing bound fails its check. */
static inline int64_t kd_sat_add(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_add_overflow(a, b, &r) ? (b > 0 ? INT64_MAX : INT64_MIN) : r;
}
static inline int64_t kd_sat_sub(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_sub_overflow(a, b, &r) ? (b < 0 ? INT64_MAX : INT64_MIN) : r;
}
static inline int64_t kd_sat_mul(int64_t a, int64_t b)
{
    int64_t r;
    return __builtin_mul_overflow(a, b, &r) ? ((a < 0) != (b < 0) ? INT64_MIN : INT64_MAX) : r;
}

#define KD_FN static inline
{% include "common/numpy_ops.h" %}
