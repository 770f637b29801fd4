/* Threads per call. A fork-join region on a busy machine waits for its slowest thread: beside
   another process, or beside numpy's OpenBLAS threads spinning after a matmul in this process,
   a 2-thread region can take 10-50x its one-thread time. So each call of the entry runs its
   parallel regions on kd_team threads, all of OpenMP's or one, whichever its recent calls of
   the same sizes ran clearly faster with (a moving average of each), trying the other now and then:
   after 8 calls, then twice as far apart each time the choice stands (at most 1024 calls). A
   call right after a change of count is not counted (it pays for waking or parking threads),
   so a try lasts two calls, and its second call's time replaces that count's average, which
   dates from another state of the machine. */
#include <time.h>
#ifndef KD_TEAM_DEFINED
#define KD_TEAM_DEFINED
#ifndef KD_UNUSED
#define KD_UNUSED __attribute__((unused))
#endif
extern int omp_get_max_threads(void);
/* the threads of this call's parallel regions: set by the entry, read by every kernel (one
   variable of the library when its kernels are translation units of their own) */
#if defined(KD_SPLIT_KERNEL)
extern __attribute__((visibility("hidden"))) __thread int kd_team;
#elif defined(KD_SPLIT)
__attribute__((visibility("hidden"))) __thread int kd_team = 1;
#else
static __thread int kd_team = 1;
#endif
typedef struct {
    uint64_t key;                 /* the call's sizes and strides, hashed */
    int64_t ns[2];                /* moving average of a call's time: one thread, all; -1: unknown */
    int64_t calls, probe_at, gap;
    int64_t used[2];              /* calls run on one thread, on all */
    int prev;                     /* the last call's count (0: one, 1: all; -1: none yet) */
    int choice;                   /* the count calls run, tries aside */
    int trying;                   /* calls left in a try of the other count */
} kd_team_slot;
typedef struct {
    kd_team_slot slot[4];         /* the last four size signatures seen */
    int next, last;               /* the slot to reuse next; the last call's team (0: none yet) */
    char lock;                    /* calls from several threads at once: one updates, the others reuse */
} kd_team_state;

static inline int64_t kd_clock_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* the count to run: the other one only once its average is clearly (15%) below this one's, so
   that a noisy call does not flip the choice back and forth */
static inline int kd_team_best(const kd_team_slot *t, int now)
{
    if (t->ns[1] < 0)
        return 1;
    if (t->ns[0] < 0)
        return 0;
    return 100 * t->ns[1 - now] < 85 * t->ns[now] ? 1 - now : now;
}

/* choose this call's team; returns the slot and count (0: one thread, 1: all) to report, or -1 */
static KD_UNUSED int kd_team_begin(kd_team_state *st, const int64_t *meta, int n_meta)
{
    const int all = omp_get_max_threads();
    kd_team = all;
    if (all <= 1)
        return -1;
    if (__atomic_test_and_set(&st->lock, __ATOMIC_ACQUIRE)) {  /* another thread's call is choosing */
        const int last = __atomic_load_n(&st->last, __ATOMIC_RELAXED);
        kd_team = last ? last : all;
        return -1;
    }
    uint64_t key = 1469598103934665603ULL;
    for (int i = 0; i < n_meta; ++i) key = (key ^ (uint64_t)meta[i]) * 1099511628211ULL;
    int s = 0;
    while (s < 4 && !(st->slot[s].key == key && st->slot[s].gap)) ++s;
    if (s == 4) {
        s = st->next++ & 3;
        st->slot[s] = (kd_team_slot){key, {-1, -1}, 0, 8, 8, {0, 0}, -1, 1, 0};
    }
    kd_team_slot *t = &st->slot[s];
    ++t->calls;
    if (!t->trying && t->ns[0] >= 0 && t->ns[1] >= 0 && t->calls >= t->probe_at)
        t->trying = 2;
    const int best = kd_team_best(t, t->choice);
    const int mode = t->trying ? 1 - best : best;
    kd_team = mode ? all : 1;
    __atomic_store_n(&st->last, kd_team, __ATOMIC_RELAXED);
    ++t->used[mode];
    __atomic_clear(&st->lock, __ATOMIC_RELEASE);
    return 2 * s + mode;
}

static KD_UNUSED void kd_team_end(kd_team_state *st, int slot_mode, int64_t ns)
{
    if (slot_mode < 0 || __atomic_test_and_set(&st->lock, __ATOMIC_ACQUIRE))
        return;
    kd_team_slot *t = &st->slot[slot_mode / 2];
    const int mode = slot_mode % 2, settled = mode == t->prev;
    t->prev = mode;
    if (t->trying) {
        if (--t->trying == 0) {
            const int before = t->choice;
            if (settled)
                t->ns[mode] = ns;
            t->choice = kd_team_best(t, before);
            t->gap = t->choice != before ? 8 : t->gap < 1024 ? 2 * t->gap : 1024;
            t->probe_at = t->calls + t->gap;
        }
    } else if (settled) {
        /* a call counts at most twice the average: one slow call (a page fault, a thread the
           scheduler woke late) moves it by a quarter; a slower machine moves it in a few calls */
        const int64_t avg = t->ns[mode], capped = avg >= 0 && ns > 2 * avg ? 2 * avg : ns;
        t->ns[mode] = avg < 0 ? ns : (3 * avg + capped) / 4;
        t->choice = kd_team_best(t, mode);
    } else {
        t->choice = mode;
    }
    __atomic_clear(&st->lock, __ATOMIC_RELEASE);
}

/* per size signature seen: calls on one thread, calls on all, and the averages (ns); -1: none */
static KD_UNUSED void kd_team_report(const kd_team_state *st, int64_t *out)
{
    for (int s = 0; s < 4; ++s) {
        const kd_team_slot *t = &st->slot[s];
        out[4 * s] = t->gap ? t->used[0] : -1;
        out[4 * s + 1] = t->gap ? t->used[1] : -1;
        out[4 * s + 2] = t->ns[0];
        out[4 * s + 3] = t->ns[1];
    }
}
#endif
