/* numpy's semantics for the operations C and CUDA spell differently, shared by the C and the
   CUDA prelude; KD_FN (static inline / __device__ __forceinline__) is defined by the includer. */
/* Integer floor division and modulo as numpy: x // 0 == 0, x % 0 == 0, no trap on MIN // -1. */
#define KD_INT_OPS(T, S)                                                              \
KD_FN T kd_floordiv_##S(T a, T b)                                                     \
{                                                                                     \
    if (b == 0) return 0;                                                             \
    if (b == -1) return (T)(0 - (uint64_t)a);                                         \
    T q = a / b;                                                                      \
    return (q * b != a && ((a < 0) != (b < 0))) ? q - 1 : q;                          \
}                                                                                     \
KD_FN T kd_mod_##S(T a, T b)                                                          \
{                                                                                     \
    if (b == 0 || b == -1) return 0;                                                  \
    T r = a % b;                                                                      \
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;                              \
}                                                                                     \
KD_FN T kd_pow_##S(T a, T b)                                                          \
{                                                                                     \
    if (b < 0) return a == 1 ? 1 : (a == -1 ? ((b & 1) ? -1 : 1) : 0);                \
    uint64_t r = 1, x = (uint64_t)a;                                                  \
    while (b) { if (b & 1) r *= x; x *= x; b >>= 1; }                                 \
    return (T)r;                                                                      \
}                                                                                     \
KD_FN T kd_abs_##S(T a) { return a < 0 ? (T)(0 - (uint64_t)a) : a; }                  \
KD_FN T kd_min_##S(T a, T b) { return a < b ? a : b; }                                \
KD_FN T kd_max_##S(T a, T b) { return a > b ? a : b; }

KD_INT_OPS(int32_t, i32)
KD_INT_OPS(int64_t, i64)

/* Float floor division and modulo as numpy's npy_divmod; min/max propagate NaN. */
#define KD_FLOAT_OPS(T, S, F)                                                         \
KD_FN T kd_mod_##S(T a, T b)                                                          \
{                                                                                     \
    T m = fmod##F(a, b);                                                              \
    if (b == 0) return m;                                                             \
    if (m != 0) { if ((b < 0) != (m < 0)) m += b; }                                   \
    else m = copysign##F((T)0, b);                                                    \
    return m;                                                                         \
}                                                                                     \
KD_FN T kd_floordiv_##S(T a, T b)                                                     \
{                                                                                     \
    if (b == 0) return a / b;                                                         \
    T m = fmod##F(a, b);                                                              \
    T d = (a - m) / b;                                                                \
    if (m != 0 && ((b < 0) != (m < 0))) d -= 1;                                       \
    if (d != 0) { T f = floor##F(d); if (d - f > (T)0.5) f += 1; return f; }          \
    return copysign##F((T)0, a / b);                                                  \
}                                                                                     \
KD_FN T kd_min_##S(T a, T b) { return (a != a || a < b) ? a : b; }                    \
KD_FN T kd_max_##S(T a, T b) { return (a != a || a > b) ? a : b; }                    \
KD_FN T kd_softplus_##S(T x)                                                          \
{   /* branch-free: x + log1p(exp(-x)) for x > 0, log1p(exp(x)) otherwise */          \
    T l = kd_log1p_##S(kd_exp_##S(-fabs##F(x)));                                      \
    T pos = x + l;                                                                    \
    return x > 0 ? pos : l;                                                           \
}                                                                                     \
KD_FN T kd_sigmoid_##S(T x)                                                           \
{                                                                                     \
    T e = kd_exp_##S(-fabs##F(x)), r = 1 / (1 + e); /* branch-free: it vectorizes */  \
    T neg = e * r;                                                                    \
    return x >= 0 ? r : neg;                                                          \
}                                                                                     \
KD_FN T kd_log1mexp_##S(T x) /* log(1 - exp(x)), x <= 0 */                            \
{                                                                                     \
    T near0 = kd_log_##S(-kd_expm1_##S(x)), far = kd_log1p_##S(-kd_exp_##S(x));       \
    return x > (T)-0.6931471805599453 ? near0 : far;                                  \
}                                                                                     \
KD_FN T kd_sqr_##S(T x) { return x * x; }                                            \
KD_FN T kd_select_##S(int c, T a, T b) { return c ? a : b; } /* a and b both computed */

KD_FLOAT_OPS(float, f32, f)
KD_FLOAT_OPS(double, f64, )

/* Float -> int as numpy on x86: NaN and values outside the target's range give its minimum
   (C leaves them undefined, and a GPU saturates); in range, truncation toward zero. */
#define KD_F2I(F, FS, T, TS, LO, HI)                                                 \
KD_FN T kd_##FS##_to_##TS(F x) { return (x >= (F)(LO) && x < (F)(HI)) ? (T)x : (T)(LO); }

KD_F2I(float, f32, int32_t, i32, -2147483648.0, 2147483648.0)
KD_F2I(double, f64, int32_t, i32, -2147483648.0, 2147483648.0)
KD_F2I(float, f32, int64_t, i64, -9223372036854775808.0, 9223372036854775808.0)
KD_F2I(double, f64, int64_t, i64, -9223372036854775808.0, 9223372036854775808.0)
