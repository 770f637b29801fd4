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
float erfcf(float);
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
double erfc(double);
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

/* float32 transcendentals written out, branch-free: a SIMD loop runs them on every lane at the
   same speed whatever the values. glibc's vector routines leave a whole vector to scalar code
   when one lane is special (an exp that overflows or underflows, a log of 0 or of a negative
   number, a log1p below -1, erfcf below 0.5 or above 10): 5-20 ns an element instead of
   0.2-1. The polynomials come from tools/fit_intrinsics.py; tests/test_intrinsics.py measures
   each function's max ULP error against float64 over the whole float32 range, and
   docs/intrinsics.md lists them. float64 calls glibc's functions. */
/* exp: degree 5 on [-0.346574, 0.346574], max relative error 2.96e-09 */
#define KD_EXP_P0 0.5000000013462217
#define KD_EXP_P1 0.16666666719007717
#define KD_EXP_P2 0.04166646497612812
#define KD_EXP_P3 0.008333298480362013
#define KD_EXP_P4 0.0013933643522427088
#define KD_EXP_P5 0.00019899276216967155
/* log: degree 8 on [-0.292893, 0.414214], max relative error 7.25e-08 */
#define KD_LOG_P0 0.3333333119084813
#define KD_LOG_P1 -0.24999989048734908
#define KD_LOG_P2 0.20000707478390256
#define KD_LOG_P3 -0.16668480239501746
#define KD_LOG_P4 0.14249936532992413
#define KD_LOG_P5 -0.12411050684048222
#define KD_LOG_P6 0.11661511067617425
#define KD_LOG_P7 -0.11571200726790565
#define KD_LOG_P8 0.0714975389092157
/* expm1: degree 5 on [-0.5, 0.5], max relative error 8.92e-09 */
#define KD_EXPM1_P0 0.1666666680176017
#define KD_EXPM1_P1 0.041666667139340446
#define KD_EXPM1_P2 0.008333236108961103
#define KD_EXPM1_P3 0.0013888737694626953
#define KD_EXPM1_P4 0.00019944884266886583
#define KD_EXPM1_P5 2.4922444616989577e-05
/* erfc: degree 12 on [-1, 0.669421], max relative error 2.64e-10 */
#define KD_ERFC_P0 1.2769783817478169
#define KD_ERFC_P1 -0.0927638292921324
#define KD_ERFC_P2 -0.16603042414580813
#define KD_ERFC_P3 0.16405138265533656
#define KD_ERFC_P4 -0.054219385709275245
#define KD_ERFC_P5 -0.008034960203609597
#define KD_ERFC_P6 0.008717245130407336
#define KD_ERFC_P7 0.0012734912058558901
#define KD_ERFC_P8 -0.0014350422608103133
#define KD_ERFC_P9 -0.0004478755609074742
#define KD_ERFC_P10 0.0001671420684697933
#define KD_ERFC_P11 0.00011854726677340601
#define KD_ERFC_P12 1.8839072744569205e-05
/* erf: degree 4 on [0, 0.25], max relative error 1.40e-09 */
#define KD_ERF_P0 1.128379165614793
#define KD_ERF_P1 -0.3761260917333744
#define KD_ERF_P2 0.11282834739102938
#define KD_ERF_P3 -0.026757944329935165
#define KD_ERF_P4 0.004719505349327363

KD_FN float kd_bits_f32(uint32_t u) { float f; __builtin_memcpy(&f, &u, 4); return f; }
KD_FN uint32_t kd_u32_f32(float f) { uint32_t u; __builtin_memcpy(&u, &f, 4); return u; }

/* exp(x) = 2^n exp(r), n = rint(x / ln2), r = x - n ln2 (ln2 in two parts: n * 0.693359375 is
   exact); 2^n applied as two powers of two, so that results down to the subnormals round once */
KD_FN float kd_exp_f32(float x)
{
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    xc = x != x ? 0.0f : xc;
    float n = __builtin_rintf(xc * 1.44269504088896341f);
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = (float)KD_EXP_P5;
    p = p * r + (float)KD_EXP_P4;
    p = p * r + (float)KD_EXP_P3;
    p = p * r + (float)KD_EXP_P2;
    p = p * r + (float)KD_EXP_P1;
    p = p * r + (float)KD_EXP_P0;
    p = p * (r * r) + r + 1.0f;
    int32_t k = (int32_t)n, k1 = k >> 1, k2 = k - k1;
    float y = p * kd_bits_f32((uint32_t)(k1 + 127) << 23) * kd_bits_f32((uint32_t)(k2 + 127) << 23);
    return x != x ? x : y;
}

/* log(x) = e ln2 + log(m), x = 2^e m with m in [sqrt(1/2), sqrt(2)) (subnormals scaled by 2^24
   first); log(1 + f) = f - f^2/2 + f^3 P(f) */
KD_FN float kd_log_f32(float x)
{
    int tiny = x < 1.17549435e-38f;
    float xs = tiny ? x * 16777216.0f : x;
    uint32_t u = kd_u32_f32(xs);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 126;
    float m = kd_bits_f32((u & 0x007fffffu) | 0x3f000000u);
    int low = m < 0.707106781f;
    e = low ? e - 1 : e;
    float m2 = m + m;
    m = low ? m2 : m;
    float f = m - 1.0f, z = f * f;
    float p = (float)KD_LOG_P8;
    p = p * f + (float)KD_LOG_P7;
    p = p * f + (float)KD_LOG_P6;
    p = p * f + (float)KD_LOG_P5;
    p = p * f + (float)KD_LOG_P4;
    p = p * f + (float)KD_LOG_P3;
    p = p * f + (float)KD_LOG_P2;
    p = p * f + (float)KD_LOG_P1;
    p = p * f + (float)KD_LOG_P0;
    float ef = (float)e - (tiny ? 24.0f : 0.0f);
    float y = f * z * p + ef * -2.12194440e-4f - 0.5f * z;
    y = f + y + ef * 0.693359375f;
    y = x == 0.0f ? -INFINITY : y;
    y = x < 0.0f ? NAN : y;
    y = x == INFINITY ? INFINITY : y;
    return x != x ? x : y;
}

/* log1p(x) = log(u) * x / (u - 1) with u = 1 + x rounded: the quotient corrects u's rounding */
KD_FN float kd_log1p_f32(float x)
{
    float u = 1.0f + x, d = u - 1.0f;
    float l = kd_log_f32(u);
    float q = d == 0.0f ? 1.0f : x / d;
    float y = d == 0.0f ? x : l * q;
    y = x == INFINITY ? INFINITY : y;
    return x != x ? x : y;
}

/* expm1: x + x^2/2 + x^3 P(x) for |x| <= 1/2, exp(x) - 1 beyond (no cancellation there) */
KD_FN float kd_expm1_f32(float x)
{
    float p = (float)KD_EXPM1_P5;
    p = p * x + (float)KD_EXPM1_P4;
    p = p * x + (float)KD_EXPM1_P3;
    p = p * x + (float)KD_EXPM1_P2;
    p = p * x + (float)KD_EXPM1_P1;
    p = p * x + (float)KD_EXPM1_P0;
    float z = x * x;
    float small = x + (0.5f * z + z * x * p);
    float big = kd_exp_f32(x) - 1.0f;
    float ax = x < 0.0f ? -x : x;
    return ax <= 0.5f ? small : big;
}

/* erfc(a) = exp(-a^2) P(q) / (1 + 2a), q = (a - 2) / (a + 2) (P: relative error 3e-10 on
   [0, 10.1]; above, erfc rounds to 0 in float32), in float: exp(-a^2) as exp(-s) * (1 - t) with
   s = a * a rounded and t its rounding error (an fma), so that the square's rounding (up to 50
   ULP of the result near a = 10) does not reach the result. */
KD_FN float kd_erfc_f32(float x)
{
    float a = x < 0.0f ? -x : x;
    float ac = a > 10.1f ? 10.1f : a;
    float q = (ac - 2.0f) / (ac + 2.0f);
    float p = (float)KD_ERFC_P12;
    p = p * q + (float)KD_ERFC_P11; p = p * q + (float)KD_ERFC_P10; p = p * q + (float)KD_ERFC_P9;
    p = p * q + (float)KD_ERFC_P8; p = p * q + (float)KD_ERFC_P7; p = p * q + (float)KD_ERFC_P6;
    p = p * q + (float)KD_ERFC_P5; p = p * q + (float)KD_ERFC_P4; p = p * q + (float)KD_ERFC_P3;
    p = p * q + (float)KD_ERFC_P2; p = p * q + (float)KD_ERFC_P1; p = p * q + (float)KD_ERFC_P0;
    float s = ac * ac, t = __builtin_fmaf(ac, ac, -s);
    float r = kd_exp_f32(-s) * (p / (1.0f + 2.0f * ac));
    r = r - r * t;
    r = a > 10.1f ? 0.0f : r;
    float neg = 2.0f - r;
    r = x < 0.0f ? neg : r;
    float z = x * x, e = (float)KD_ERF_P4;  /* |x| <= 1/2: 1 - erf(x), erf(x) = x R(x^2) */
    e = e * z + (float)KD_ERF_P3; e = e * z + (float)KD_ERF_P2; e = e * z + (float)KD_ERF_P1;
    e = e * z + (float)KD_ERF_P0;
    float small = 1.0f - x * e;
    r = a <= 0.5f ? small : r;
    return x != x ? x : r;
}

KD_FN double kd_exp_f64(double x) { return exp(x); }
KD_FN double kd_log_f64(double x) { return log(x); }
KD_FN double kd_log1p_f64(double x) { return log1p(x); }
KD_FN double kd_expm1_f64(double x) { return expm1(x); }
KD_FN double kd_erfc_f64(double x) { return erfc(x); }

{% include "common/numpy_ops.h" %}
