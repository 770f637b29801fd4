/* kerneldsl's CUDA emulator: run CUDA kernels on the CPU, for testing without a GPU.

   Included (g++ -x c++ -include, or prepended) before a .cu file that kerneldsl generated.
   Each thread of a block is a fiber (ucontext) with a small stack and a guard page; the
   blocks of a grid run in turn on the calling OS thread. Fibers switch only at
   synchronization points (__syncthreads, warp shuffles and votes), so atomics are plain
   read-modify-writes. Misuse is reported, not hung on:
     - a divergent __syncthreads (threads of a block at different barriers, or some threads
       exited while others wait) -> error;
     - threads that wait on each other forever (e.g. a shuffle against a barrier) -> error;
     - an out-of-bounds index into a KD_SHARED_ARRAY -> error;
   the launch then returns nonzero and kd_emu_error() says what happened.
   Shared arrays (KD_SHARED_ARRAY) are filled with 0xff bytes (NaN for floats) at the start
   of every block, so a kernel that reads shared memory before writing it sees garbage, as on
   a GPU. Launches are serialized by a process-wide mutex. */
#ifndef KD_CUDA_EMU_H
#define KD_CUDA_EMU_H

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define KD_CUDA_EMU 1

/* --- the CUDA language, as far as our kernels use it --------------------------------- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static  /* one copy per kernel, used by one block at a time */
#define __syncthreads() kd_emu::syncthreads(__LINE__)
#define __syncwarp(...) kd_emu::syncwarp(__LINE__)
#define __threadfence() ((void)0)
#define warpSize 32

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 { unsigned x, y, z; };

namespace kd_emu {

enum { RUNNABLE, DONE };

struct Fiber {
    ucontext_t ctx;
    int state;
    uint3 idx;
};

struct Warp {
    unsigned long long slots[32];
    int arrived;
    unsigned gen;
};

struct Launch {
    dim3 grid, block;
    uint3 block_idx;
    unsigned nthreads;
    Fiber *fibers;
    Fiber *cur;
    Warp *warps;
    ucontext_t sched;
    void (*body)(void *);
    void *closure;
    int bar_arrived, bar_line, exited;
    unsigned bar_gen;
    bool progressed, failed;
};

inline thread_local Launch *g = nullptr;
inline unsigned long long block_epoch = 0;   /* counts blocks run, for fresh shared memory */
inline char error_text[1024];
inline pthread_mutex_t launch_lock = PTHREAD_MUTEX_INITIALIZER;

inline uint3 block_idx() { return g->block_idx; }
inline uint3 thread_idx() { return g->cur->idx; }
inline unsigned thread_rank(const Fiber *f) { return (unsigned)(f - g->fibers); }

inline void yield() { swapcontext(&g->cur->ctx, &g->sched); }

/* Record the first error and leave this fiber for good (the launch is abandoned). */
[[noreturn]] inline void fail(const char *fmt, ...) {
    if (!g->failed) {
        int n = snprintf(error_text, sizeof error_text, "block (%u,%u,%u) thread (%u,%u,%u): ",
                         g->block_idx.x, g->block_idx.y, g->block_idx.z,
                         g->cur->idx.x, g->cur->idx.y, g->cur->idx.z);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error_text + n, sizeof error_text - (size_t)n, fmt, ap);
        va_end(ap);
        g->failed = true;
    }
    swapcontext(&g->cur->ctx, &g->sched);
    __builtin_trap();  /* a failed fiber is never resumed */
}

inline void syncthreads(int line) {
    Launch &L = *g;
    if (L.exited > 0)
        fail("divergent __syncthreads at line %d: %d thread(s) of the block already exited", line, L.exited);
    if (L.bar_arrived == 0) L.bar_line = line;
    else if (L.bar_line != line)
        fail("divergent __syncthreads: this thread is at line %d, %d other(s) wait at line %d",
             line, L.bar_arrived, L.bar_line);
    unsigned gen = L.bar_gen;
    L.progressed = true;
    if ((unsigned)++L.bar_arrived == L.nthreads) {
        L.bar_arrived = 0;
        L.bar_gen++;
        return;
    }
    while (L.bar_gen == gen) yield();
    L.progressed = true;
}

/* The lanes of `mask` that exist in this block (the last warp may be partial). */
inline unsigned live_mask(unsigned warp) {
    unsigned first = warp * 32, n = g->nthreads - first;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

/* One step of a warp-wide rendezvous among the lanes of `mask`. */
inline void warp_barrier(Warp &w, unsigned mask, unsigned warp, const char *what) {
    unsigned want = mask & live_mask(warp);
    for (unsigned l = 0; l < 32; ++l)
        if ((want >> l & 1u) && g->fibers[warp * 32 + l].state == DONE)
            fail("%s: lane %u of the mask has already exited", what, l);
    unsigned gen = w.gen;
    g->progressed = true;
    if ((unsigned)++w.arrived == (unsigned)__builtin_popcount(want)) {
        w.arrived = 0;
        w.gen++;
        return;
    }
    while (w.gen == gen) yield();
    g->progressed = true;
}

/* Every lane of `mask` deposits `v`; `out` receives all 32 slots. */
template <class T>
inline void exchange(unsigned mask, T v, T *out, const char *what) {
    static_assert(sizeof(T) <= 8, "warp exchange of a type wider than 8 bytes");
    unsigned rank = thread_rank(g->cur), warp = rank / 32, lane = rank % 32;
    if (!(mask >> lane & 1u)) fail("%s: the calling lane %u is not in mask 0x%08x", what, lane, mask);
    Warp &w = g->warps[warp];
    memcpy(&w.slots[lane], &v, sizeof(T));
    warp_barrier(w, mask, warp, what);
    for (int l = 0; l < 32; ++l) memcpy(&out[l], &w.slots[l], sizeof(T));
    warp_barrier(w, mask, warp, what);  /* nobody overwrites a slot before all have read */
}

inline unsigned lane_id() { return thread_rank(g->cur) % 32; }

template <class T> inline T shfl(unsigned mask, T v, int src, int width, const char *what) {
    T all[32];
    exchange(mask, v, all, what);
    unsigned lane = lane_id(), base = lane - lane % (unsigned)width;
    unsigned s = base + ((unsigned)src % (unsigned)width);
    return (mask >> s & 1u) ? all[s] : v;
}

inline void syncwarp(int line) {
    int dummy[32];
    (void)line;
    exchange(0xffffffffu & live_mask(thread_rank(g->cur) / 32), 0, dummy, "__syncwarp");
}

inline void fiber_main() {
    g->body(g->closure);
    Launch &L = *g;
    L.cur->state = DONE;
    L.exited++;
    L.progressed = true;
    if (L.bar_arrived > 0)
        fail("divergent __syncthreads: this thread exited while %d thread(s) wait at line %d",
             L.bar_arrived, L.bar_line);
}  /* returns through uc_link to the scheduler */

constexpr size_t STACK = 64 * 1024;

inline int run(dim3 grid, dim3 block, void (*body)(void *), void *closure) {
    unsigned nthreads = block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        snprintf(error_text, sizeof error_text, "invalid launch configuration: grid (%u,%u,%u) block (%u,%u,%u)",
                 grid.x, grid.y, grid.z, block.x, block.y, block.z);
        return 1;
    }
    pthread_mutex_lock(&launch_lock);
    size_t page = (size_t)sysconf(_SC_PAGESIZE), slot = STACK + page;
    char *stacks = (char *)mmap(nullptr, slot * nthreads, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (stacks == MAP_FAILED) {
        snprintf(error_text, sizeof error_text, "emulator: cannot map %u fiber stacks", nthreads);
        pthread_mutex_unlock(&launch_lock);
        return 1;
    }
    for (unsigned t = 0; t < nthreads; ++t) mprotect(stacks + t * slot, page, PROT_NONE);  /* guard */
    Fiber *fibers = new Fiber[nthreads];
    Warp *warps = new Warp[(nthreads + 31) / 32]();
    Launch L{};
    L.grid = grid;
    L.block = block;
    L.nthreads = nthreads;
    L.fibers = fibers;
    L.warps = warps;
    L.body = body;
    L.closure = closure;
    Launch *saved = g;
    g = &L;
    int rc = 0;
    for (unsigned bz = 0; bz < grid.z && !rc; ++bz)
    for (unsigned by = 0; by < grid.y && !rc; ++by)
    for (unsigned bx = 0; bx < grid.x && !rc; ++bx) {
        L.block_idx = uint3{bx, by, bz};
        L.bar_arrived = L.exited = 0;
        L.bar_gen = 0;
        block_epoch++;
        memset(warps, 0, sizeof(Warp) * ((nthreads + 31) / 32));
        for (unsigned t = 0; t < nthreads; ++t) {
            Fiber &f = fibers[t];
            f.state = RUNNABLE;
            f.idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            getcontext(&f.ctx);
            f.ctx.uc_stack.ss_sp = stacks + t * slot + page;
            f.ctx.uc_stack.ss_size = STACK;
            f.ctx.uc_link = &L.sched;
            makecontext(&f.ctx, fiber_main, 0);
        }
        unsigned done = 0;
        while (done < nthreads) {
            L.progressed = false;
            done = 0;
            for (unsigned t = 0; t < nthreads && !L.failed; ++t) {
                if (fibers[t].state == DONE) { done++; continue; }
                L.cur = &fibers[t];
                swapcontext(&L.sched, &fibers[t].ctx);
                if (fibers[t].state == DONE) done++;
            }
            if (L.failed) { rc = 1; break; }
            if (done < nthreads && !L.progressed) {
                snprintf(error_text, sizeof error_text,
                         "block (%u,%u,%u): deadlock: %u thread(s) wait forever (at line %d of a "
                         "__syncthreads, or at a warp shuffle/vote whose lanes diverged)",
                         bx, by, bz, nthreads - done, L.bar_arrived ? L.bar_line : -1);
                rc = 1;
                break;
            }
        }
    }
    g = saved;
    delete[] fibers;
    delete[] warps;
    munmap(stacks, slot * nthreads);
    pthread_mutex_unlock(&launch_lock);
    return rc;
}

template <class F> void invoke(void *p) { (*(F *)p)(); }

/* kd_emu::launch(kernel, grid, block, args...): kernel<<<grid, block>>>(args...), synchronously. */
template <class K, class... A> int launch(K kernel, dim3 grid, dim3 block, A... args) {
    auto call = [&]() { kernel(args...); };
    return run(grid, block, &invoke<decltype(call)>, &call);
}

/* A __shared__ array with bounds checks, fresh (0xff bytes) in every block. */
template <class T, int N> struct SharedArray {
    T data[N];
    unsigned long long epoch;
    const char *name;
    explicit SharedArray(const char *n) : epoch(0), name(n) {}
    T &operator[](int64_t i) {
        if (epoch != block_epoch) {
            memset((void *)data, 0xff, sizeof data);
            epoch = block_epoch;
        }
        if (i < 0 || i >= N) fail("shared array %s[%d]: index %lld out of bounds", name, N, (long long)i);
        return data[i];
    }
};

}  // namespace kd_emu

#define blockIdx (kd_emu::block_idx())
#define threadIdx (kd_emu::thread_idx())
#define blockDim (kd_emu::g->block)
#define gridDim (kd_emu::g->grid)
#define KD_SHARED_ARRAY(T, name, N) static kd_emu::SharedArray<T, N> name(#name)

/* --- warp shuffles and votes ---------------------------------------------------------- */
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) {
    return kd_emu::shfl(m, v, src, w, "__shfl_sync");
}
template <class T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) {
    unsigned lane = kd_emu::lane_id() % (unsigned)w;
    return kd_emu::shfl(m, v, lane + d < (unsigned)w ? (int)(lane + d) : (int)lane, w, "__shfl_down_sync");
}
template <class T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) {
    unsigned lane = kd_emu::lane_id() % (unsigned)w;
    return kd_emu::shfl(m, v, lane >= d ? (int)(lane - d) : (int)lane, w, "__shfl_up_sync");
}
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) {
    unsigned lane = kd_emu::lane_id() % (unsigned)w;
    unsigned s = lane ^ (unsigned)x;
    return kd_emu::shfl(m, v, s < (unsigned)w ? (int)s : (int)lane, w, "__shfl_xor_sync");
}
inline unsigned __ballot_sync(unsigned m, int p) {
    int all[32];
    kd_emu::exchange(m, p ? 1 : 0, all, "__ballot_sync");
    unsigned r = 0;
    for (int l = 0; l < 32; ++l) if ((m >> l & 1u) && all[l]) r |= 1u << l;
    return r;
}
inline int __all_sync(unsigned m, int p) { return __ballot_sync(m, p) == (m & kd_emu::live_mask(kd_emu::thread_rank(kd_emu::g->cur) / 32)); }
inline int __any_sync(unsigned m, int p) { return __ballot_sync(m, p) != 0; }
inline unsigned __activemask() { return kd_emu::live_mask(kd_emu::thread_rank(kd_emu::g->cur) / 32); }

/* --- atomics: fibers switch only at barriers, so these are plain read-modify-writes ----- */
template <class T> inline T atomicAdd(T *p, T v) { T o = *p; *p = o + v; return o; }
template <class T> inline T atomicSub(T *p, T v) { T o = *p; *p = o - v; return o; }
template <class T> inline T atomicExch(T *p, T v) { T o = *p; *p = v; return o; }
template <class T> inline T atomicMax(T *p, T v) { T o = *p; if (v > o) *p = v; return o; }
template <class T> inline T atomicMin(T *p, T v) { T o = *p; if (v < o) *p = v; return o; }
template <class T> inline T atomicCAS(T *p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }
template <class T> inline T atomicAnd(T *p, T v) { T o = *p; *p = o & v; return o; }
template <class T> inline T atomicOr(T *p, T v) { T o = *p; *p = o | v; return o; }

/* --- math intrinsics the CUDA spellings use ------------------------------------------- */
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x != x ? 0.0f : (x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x)); }
inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
inline int __float_as_int(float x) { int i; memcpy(&i, &x, 4); return i; }

/* --- vector types: CUDA's, with its alignment (a misaligned access faults on a GPU) ---- */
#define KD_EMU_VEC(T, N, A, ...) struct __attribute__((aligned(A))) N { T __VA_ARGS__; };
KD_EMU_VEC(float, float2, 8, x, y)
KD_EMU_VEC(float, float4, 16, x, y, z, w)
KD_EMU_VEC(int, int2, 8, x, y)
KD_EMU_VEC(int, int4, 16, x, y, z, w)
KD_EMU_VEC(double, double2, 16, x, y)
KD_EMU_VEC(long long, longlong2, 16, x, y)
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
inline longlong2 make_longlong2(long long x, long long y) { return {x, y}; }

namespace kd_emu {
inline unsigned long long vector_accesses = 0;  /* counted, so that tests can see the vector path taken */
inline void check_aligned(const void *p, size_t align, const char *what) {
    if ((uintptr_t)p % align) fail("misaligned %zu-byte vector %s at address %p", align, what, p);
    vector_accesses++;
}
}  // namespace kd_emu
extern "C" unsigned long long kd_emu_vector_accesses(void) { return kd_emu::vector_accesses; }
#define KD_CHECK_ALIGNED(p, align, what) kd_emu::check_aligned(p, align, what)

extern "C" const char *kd_emu_error(void) { return kd_emu::error_text; }

#endif
