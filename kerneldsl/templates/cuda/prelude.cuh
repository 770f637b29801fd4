/* kerneldsl CUDA prelude: numpy's semantics for the operations CUDA spells differently.
   The helpers shared with the C prelude come from templates/common/numpy_ops.h. */
#include <stdint.h>
#include <math.h>

#define KD_FN __device__ __forceinline__  /* not static: unused ones must not warn */

/* A run-time checked index: out of [0, n) records the code and the index in `report`
   (report[0] = code, report[1] = index) and reads element 0 instead. */
KD_FN int64_t kd_chk(int64_t i, int64_t n, int code, int64_t *report)
{
    if ((uint64_t)i >= (uint64_t)n) {
        atomicExch((unsigned long long *)&report[1], (unsigned long long)i);
        atomicExch((unsigned long long *)&report[0], (unsigned long long)code);
        return 0;
    }
    return i;
}

/* The C prelude's SIMD-safe wrappers: the GPU's own functions have no scalar fallback. */
#define kd_exp_f32 expf
#define kd_exp_f64 exp
#define kd_expm1_f32 expm1f
#define kd_expm1_f64 expm1
#define kd_log_f32 logf
#define kd_log_f64 log
#define kd_log1p_f32 log1pf
#define kd_log1p_f64 log1p

{% include "common/numpy_ops.h" %}

/* Combiners of the block-wide row reduction (sum, max, min), NaN-propagating like numpy. */
template <class T> KD_FN T kd_comb_sum(T a, T b) { return a + b; }
KD_FN float kd_comb_max(float a, float b) { return kd_max_f32(a, b); }
KD_FN double kd_comb_max(double a, double b) { return kd_max_f64(a, b); }
KD_FN int32_t kd_comb_max(int32_t a, int32_t b) { return kd_max_i32(a, b); }
KD_FN int64_t kd_comb_max(int64_t a, int64_t b) { return kd_max_i64(a, b); }
KD_FN float kd_comb_min(float a, float b) { return kd_min_f32(a, b); }
KD_FN double kd_comb_min(double a, double b) { return kd_min_f64(a, b); }
KD_FN int32_t kd_comb_min(int32_t a, int32_t b) { return kd_min_i32(a, b); }
KD_FN int64_t kd_comb_min(int64_t a, int64_t b) { return kd_min_i64(a, b); }

#ifndef KD_CUDA_EMU
#define KD_SHARED_ARRAY(T, name, N) __shared__ T name[N]
#define KD_CHECK_ALIGNED(p, align, what) ((void)0)
#endif

/* Vector loads and stores (float4 and kin: 16 bytes in one instruction); the emulator checks
   the alignment a GPU requires. */
template <class V, class T> KD_FN V kd_vload(const T *p)
{
    KD_CHECK_ALIGNED(p, sizeof(V), "load");
    return *(const V *)p;
}
template <class V, class T> KD_FN void kd_vstore(T *p, V v)
{
    KD_CHECK_ALIGNED(p, sizeof(V), "store");
    *(V *)p = v;
}
