/* _smx_native: fused, accurate softmax / log-softmax / logsumexp / cross-entropy
 * kernels for smx (module smx_cli.core._smx_native).
 *
 * CPython C API only, arrays through the buffer protocol (no numpy C-API); the
 * GIL is released inside the row loops, so the Python wrapper
 * (smx_cli/core/native.py) runs contiguous row blocks on Python threads.
 *
 * Numerics (see native.py for the stated bounds):
 *   - every input format is widened to float64; 16/32-bit results are rounded
 *     ONCE from float64 (f64 -> f16 and f64 -> bf16 round-to-nearest-even are
 *     done directly on the bits, never through float32);
 *   - 16/32-bit softmax and log-softmax need a float64 value within 2^-44
 *     relative error only: they take the single-word path (exp1, blocked lane
 *     sums; error budget before lowp_exp_sum), rows of <= 16 columns in
 *     blocks of rows flattened so the loops vectorise across rows; their
 *     cross-entropy takes one sweep (lowp_xent_sweep; probability targets:
 *     xp_sweep, every format). The rest of this list
 *     is the float64 path (and logsumexp):
 *   - d = fl(x - m) and its exact rounding error (TwoSum) are kept, so
 *     exp(x - m) = exp(d) (1 + err) to O(u^2);
 *   - exp: branch-free Cody-Waite reduction (ln2 split hi/lo), degree-13
 *     Taylor polynomial, result as an unevaluated pair hi + lo (Fast2Sum of
 *     1 + r and the polynomial tail), scaled by 2^k in two exact steps so
 *     subnormal results are rounded once;
 *   - row sums: each term is split on a grid scaled to the largest term
 *     (add and subtract 1.5 * 2^g), the grid parts sum exactly in any order,
 *     the remainders (and the exp's lo words) are summed plainly: a SIMD
 *     friendly compensated sum (Rump, Ogita & Oishi's ExtractVector);
 *   - probabilities: one corrected division out = q + (r + p_lo - q S_lo)/S_hi,
 *     q = p_hi / S_hi, r = p_hi - q S_hi exact (FMA, or Dekker's product on
 *     CPUs without FMA); the exp polynomials use FMA on the FMA variants, so
 *     float64 results may differ in the last bits from the SSE2 baseline;
 *   - log-probabilities: L = log1p(sum_{i != argmax} e_i) as a double-double
 *     (one Newton step on libm's log1p with our accurate exp/expm1), then
 *     out = TwoSum(z, -L_hi) folded with the shift error and L_lo; the
 *     dominant entry is -L (relative accuracy kept).
 *
 * Build flags (setup.py): -O3 -fno-trapping-math -ffp-contract=off.
 *   -fno-trapping-math: lets gcc if-convert and vectorise the exp loop (we never
 *     read FP exception flags); it does not change any result.
 *   -ffp-contract=off: the error-free transformations (TwoSum, Veltkamp
 *     splitting, the grid split) must not be fused into FMAs behind our back;
 *     FMAs are used explicitly where they are exact.
 *   Never -ffast-math (it would delete the compensations) and never
 *   -march=native (the wheel must run everywhere): CPU dispatch is done at run
 *   time (VARIANTS below: target attributes x86-64-v4 = AVX-512,
 *   x86-64-v3 = AVX2+FMA, and the SSE2 baseline).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* CPU dispatch: every kernel is compiled three times (x86-64-v4 = AVX-512,
 * x86-64-v3 = AVX2 + FMA, baseline = SSE2) and the variant is picked at run
 * time (g_isa). The FMA variants evaluate the exp polynomials with fused
 * multiply-adds (USE_FMA is a compile-time constant of each variant, never a
 * flag tested in the loops); the baseline uses separate multiply and add. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(SMX_NO_CLONES)
#define SMX_X86 1
#define SMX_V4 __attribute__((target("arch=x86-64-v4,prefer-vector-width=512")))
#define SMX_V3 __attribute__((target("arch=x86-64-v3")))
#else
#define SMX_X86 0
#endif

enum { ISA_BASE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
static int g_isa = ISA_BASE;

/* kernel NAME_t(ARGS..., USE_FMA) -> NAME(ARGS...) dispatching on g_isa */
#if SMX_X86
#define VARIANTS(NAME, PARAMS, ...)                                             \
    SMX_V4 static void NAME##_v4 PARAMS { NAME##_t(__VA_ARGS__, 1); }            \
    SMX_V3 static void NAME##_v3 PARAMS { NAME##_t(__VA_ARGS__, 1); }            \
    static void NAME##_base PARAMS { NAME##_t(__VA_ARGS__, 0); }                \
    static void NAME PARAMS {                                                   \
        if (g_isa == ISA_AVX512) NAME##_v4(__VA_ARGS__);                        \
        else if (g_isa == ISA_AVX2) NAME##_v3(__VA_ARGS__);                     \
        else NAME##_base(__VA_ARGS__);                                          \
    }
#else
#define VARIANTS(NAME, PARAMS, ...)                                             \
    static void NAME PARAMS { NAME##_t(__VA_ARGS__, 0); }
#endif

#include "_smx_common.h"

#define LANES 8


/* ------------------------------------------------------------------------ */
/* bits                                                                      */

/* float64 -> float16, round to nearest even, in one rounding */
AI uint16_t f64_to_f16(double x) {
    uint64_t u = asu64(x);
    uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
    uint64_t a = u & 0x7fffffffffffffffull;
    double ax = asf64(a);
    /* normal range (|x| >= 2^-14): rebias, round the 52-bit mantissa to 10 */
    uint64_t reb = a - ((uint64_t)(1023 - 15) << 52);
    uint64_t rnd = (reb + ((1ull << 41) - 1) + ((reb >> 42) & 1)) >> 42;
    /* subnormal range: round |x| to a multiple of 2^-24 by one addition */
    double s = ax + 0x1p28;
    uint64_t sub = asu64(s) - asu64(0x1p28);
    uint64_t r = (ax < 0x1p-14) ? sub : rnd;
    r = (ax >= 65520.0) ? 0x7c00u : r;           /* overflow -> inf */
    r = (x != x) ? 0x7e00u : r;                   /* NaN */
    return (uint16_t)(r | sign);
}

/* float64 -> bfloat16, round to nearest even, in one rounding */
AI uint16_t f64_to_bf16(double x) {
    uint64_t u = asu64(x);
    uint16_t sign = (uint16_t)((u >> 48) & 0x8000u);
    uint64_t a = u & 0x7fffffffffffffffull;
    double ax = asf64(a);
    uint64_t reb = a - ((uint64_t)(1023 - 127) << 52);
    uint64_t rnd = (reb + ((1ull << 44) - 1) + ((reb >> 45) & 1)) >> 45;
    double s = ax + 0x1p-81;                      /* multiples of 2^-133 */
    uint64_t sub = asu64(s) - asu64(0x1p-81);
    uint64_t r = (ax < 0x1p-126) ? sub : rnd;
    r = (ax >= 0x1p128) ? 0x7f80u : r;
    r = (x != x) ? 0x7fc0u : r;
    return (uint16_t)(r | sign);
}

AI void st(void *p, Py_ssize_t j, double v, const int DT) {
    switch (DT) {
    case DT_F16: ((uint16_t *)p)[j] = f64_to_f16(v); break;
    case DT_BF16: ((uint16_t *)p)[j] = f64_to_bf16(v); break;
    case DT_F32: ((float *)p)[j] = (float)v; break;
    default: ((double *)p)[j] = v; break;
    }
}

/* is the stored value a zero (used for the underflow count) */
AI int st_is_zero(double v, const int DT) {
    switch (DT) {
    case DT_F16: return (f64_to_f16(v) & 0x7fffu) == 0;
    case DT_BF16: return (f64_to_bf16(v) & 0x7fffu) == 0;
    case DT_F32: return (float)v == 0.0f;
    default: return v == 0.0;
    }
}

/* log of half the smallest subnormal of the format: a log-probability below
 * this is a probability that rounds to 0 in the format */
static const double LOG_UNDER[4] = {
    -17.328679513998633,  /* ln 2^-25  (float16)  */
    -92.88123235939186,   /* ln 2^-134 (bfloat16) */
    -103.97207708399179,  /* ln 2^-150 (float32)  */
    -744.44007192138126,  /* ln 2^-1075 (float64) */
};

/* ------------------------------------------------------------------------ */
/* error-free transformations                                                */

#define SPLITTER 134217729.0 /* 2^27 + 1 */

/* a*b - p exactly (p = fl(a*b)); FMA when USE_FMA, else Dekker/Veltkamp */
AI double prod_err(double a, double b, double p, const int USE_FMA) {
    if (USE_FMA) return fma(a, b, -p);
    double as = a * SPLITTER, ah = as - (as - a), al = a - ah;
    double bs = b * SPLITTER, bh = bs - (bs - b), bl = b - bh;
    return ((ah * bh - p) + ah * bl + al * bh) + al * bl;
}

/* ------------------------------------------------------------------------ */
/* exp as hi + lo                                                            */

#define LOG2E 0x1.71547652b82fep0
#define LN2HI 0x1.62e42feep-1          /* fdlibm ln2_hi: k * LN2HI exact for |k| < 2^21 */
#define LN2LO 0x1.a39ef35793c76p-33
#define SHIFT 0x1.8p52

/* Q(r) with exp(r) = 1 + r + r^2 Q(r): Taylor coefficients 1/n!, n = 2..13
 * (|r| <= ln2/2: truncation below 2^-58) */
#define FMA_(a, b, c, USE_FMA) ((USE_FMA) ? fma((a), (b), (c)) : (a) * (b) + (c))
AI double expq(double r, const int USE_FMA) {
    /* Estrin's scheme: short dependency chains (the loop is latency bound) */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double c01 = FMA_(1.0 / 6.0, r, 0.5, USE_FMA);
    double c23 = FMA_(1.0 / 120.0, r, 1.0 / 24.0, USE_FMA);
    double c45 = FMA_(1.0 / 5040.0, r, 1.0 / 720.0, USE_FMA);
    double c67 = FMA_(1.0 / 362880.0, r, 1.0 / 40320.0, USE_FMA);
    double c89 = FMA_(1.0 / 39916800.0, r, 1.0 / 3628800.0, USE_FMA);
    double cab = FMA_(1.0 / 6227020800.0, r, 1.0 / 479001600.0, USE_FMA);
    double c03 = FMA_(c23, r2, c01, USE_FMA);
    double c47 = FMA_(c67, r2, c45, USE_FMA);
    double c8b = FMA_(cab, r2, c89, USE_FMA);
    double c07 = FMA_(c47, r4, c03, USE_FMA);
    return FMA_(c8b, r8, c07, USE_FMA);
}

/* exp(x) * 2^K = *hi + *lo, relative error ~0.15 u of the pair; x = -inf or
 * below -1000 gives 0, x >= 710 gives inf, NaN propagates. Branch-free.
 * K in [0, 1000] scales exactly (tiny terms keep their lo word out of the
 * subnormal range). */
AI void exp_hl_scaled(double x, int64_t K, double *hi, double *lo, const int USE_FMA) {
    x = x < -1000.0 ? -1000.0 : x;
    x = x > 710.0 ? 710.0 : x;
    double kd = x * LOG2E + SHIFT;
    uint64_t ki = asu64(kd);
    kd -= SHIFT;
    double rh = x - kd * LN2HI; /* exact (Sterbenz; kd * LN2HI exact) */
    double rl = -kd * LN2LO;
    double r = rh + rl;
    double rr = (rh - r) + rl;
    double h = 1.0 + r;
    double l = (1.0 - h) + r;   /* Fast2Sum(1, r): exact */
    l += (r * r) * expq(r, USE_FMA) + rr * h;
    double ph = h + l;
    double pl = l - (ph - h);
    int64_t k = (int64_t)(ki - asu64(SHIFT)) + K;
    int64_t k1 = (int64_t)((uint64_t)(k + 4096) >> 1) - 2048;
    int64_t k2 = k - k1;
    double s1 = asf64((uint64_t)(k1 + 1023) << 52);
    double s2 = asf64((uint64_t)(k2 + 1023) << 52);
    *hi = (ph * s1) * s2;   /* the first product is exact, the second rounds once */
    *lo = (pl * s1) * s2;
}

AI void exp_hl(double x, double *hi, double *lo, const int USE_FMA) {
    exp_hl_scaled(x, 0, hi, lo, USE_FMA);
}

/* exp(q) for q <= 0 as ONE float64 (the 16/32-bit path), 0 for q < -708 and
 * q = -inf. Cody-Waite: k = rint(q log2e) (|k| <= 1022, so 2^k is normal and
 * the scaling exact), r = (q - k LN2HI) - k LN2LO with the first step exact,
 * |r| <= 0.3466, |error of r| <= 2^-54 (one rounding; LN2HI + LN2LO = ln 2
 * within 2^-86); exp(r) = 1 + (r + r^2 Q(r)), Q the Taylor polynomial to
 * r^11/13! (truncation < 2^-52). Relative error: r's rounding (<= 2^-54),
 * the truncation, the polynomial's roundings (|r^2 Q| < 0.07, a few u of it)
 * and the final 1 + t (0.5 u): about 1.2 ulp of float64 with or without FMA;
 * the budgets below use 2^-50. */
AI double exp1(double q, const int USE_FMA) {
    double qc = q < -708.0 ? -708.0 : q;
    double kd = qc * LOG2E + SHIFT;
    uint64_t ki = asu64(kd);
    kd -= SHIFT;
    double r = qc - kd * LN2HI;   /* exact */
    r = FMA_(-kd, LN2LO, r, USE_FMA);
    double p = 1.0 + FMA_(r * r, expq(r, USE_FMA), r, USE_FMA);
    double s = asf64((ki - asu64(SHIFT) + 1023) << 52);
    return q < -708.0 ? 0.0 : p * s;
}

/* log1p(S_hi + S_lo) as a double-double (*lh + *ll), S >= 0 */
static void log1p_dd(double sh, double sl, double *lh, double *ll) {
    if (!(sh > 0.0)) { *lh = sh == 0.0 ? 0.0 : sh; *ll = 0.0; return; }
    if (isinf(sh)) { *lh = INFINITY; *ll = 0.0; return; }
    double y = log1p(sh);
    double delta;
    if (y < 0.34) {
        /* expm1(y) = y + t, t = y^2 Q(y) (relative error ~u t); Newton:
         * L = y + (S - expm1(y)) / (1 + S) */
        double t = (y * y) * expq(y, 0);
        double num = ((sh - y) - t) + sl; /* sh - y exact (Sterbenz) */
        delta = num / (1.0 + sh);
    } else {
        double eh, el;
        exp_hl(y, &eh, &el, 0);
        double a = 1.0 + sh, b = (a - 1.0);
        double ae = (1.0 - (a - b)) + (sh - b); /* TwoSum(1, sh) error */
        double num = (a - eh) + ((ae + sl) - el); /* a - eh exact (Sterbenz) */
        delta = num / eh;
    }
    double h = y + delta;
    *lh = h;
    *ll = delta - (h - y);
}

/* ------------------------------------------------------------------------ */
/* row helpers                                                               */

/* max over x[j0:j1] and whether a NaN was seen (then the max is meaningless).
 * The max is taken on integer keys (the float64 bits with the magnitude bits
 * flipped for negative numbers: monotone in the value), because integer max
 * is a reduction gcc vectorises; max(-0, +0) = +0. */
AI int64_t order_key(int64_t b) { return b ^ (int64_t)((uint64_t)(b >> 63) >> 1); }

AI double row_max(const void *x, Py_ssize_t j0, Py_ssize_t j1, int *has_nan, const int DT) {
    int64_t km = INT64_MIN, nanf = 0;
    for (Py_ssize_t j = j0; j < j1; j++) {
        double v = ld(x, j, DT);
        int64_t key = order_key((int64_t)asu64(v));
        km = key > km ? key : km;
        nanf |= v != v;
    }
    if (has_nan) *has_nan = nanf != 0;
    return j1 > j0 ? asf64((uint64_t)order_key(km)) : -INFINITY;
}

AI Py_ssize_t first_index(const void *x, Py_ssize_t C, double m, const int DT) {
    for (Py_ssize_t j = 0; j < C; j++)
        if (ld(x, j, DT) == m) return j;
    return 0;
}

/* z = (x - m)/t as q + c (c the rounding errors); -inf entries give c = 0 */
AI void shifted(double xv, double m, double t, double *q, double *c, const int HAS_T,
                const int USE_FMA) {
    double d = xv - m;
    double bv = d - xv;
    double e = (xv - (d - bv)) + (-m - bv);      /* TwoSum(x, -m) */
    if (HAS_T) {
        double qq = d / t;
        double p = qq * t;
        double rem = (d - p) - prod_err(qq, t, p, USE_FMA); /* d - qq t exactly */
        e = (rem + e) / t;
        d = qq;
    }
    *q = d;
    /* -inf entries carry no error; Dekker's split overflows for |d| > ~1e300
     * (baseline CPUs): there the correction (< 1 ulp of |q| > 1e290) is dropped */
    *c = (e - e == 0.0) ? e : 0.0;
}

typedef struct { double hi, lo, dot; } sums_t;

/* sum of exp(z_j) over j in [j0, j1) (hi + lo pair parts, to be combined),
 * grid 1.5 * 2^g; optionally stores the terms (ph, pl) and the dot
 * sum e_j * (-z_j) (entropy) */
AI void exp_sum(const void *x, Py_ssize_t j0, Py_ssize_t j1, double m, double t, double sigma,
                int64_t K,
                double *ph, double *pl, sums_t *acc_out, const int DT, const int HAS_T,
                const int USE_FMA, const int STORE, const int DOT) {
    double ah[LANES], al[LANES], ad[LANES];
    for (int l = 0; l < LANES; l++) { ah[l] = 0.0; al[l] = 0.0; ad[l] = 0.0; }
    Py_ssize_t j = j0;
#define EXP_BODY(J, L)                                                         \
    {                                                                          \
        double q, c, eh, el;                                                   \
        shifted(ld(x, (J), DT), m, t, &q, &c, HAS_T, USE_FMA);                 \
        exp_hl_scaled(q, K, &eh, &el, USE_FMA);                                \
        if (DT == DT_F64) {                                                    \
            el += eh * c;                                                      \
            if (STORE) { ph[(J)] = eh; pl[(J)] = el; }                         \
        } else { /* rounded to <= 24 bits later: the pair is not needed */     \
            eh += eh * c;                                                      \
            el = 0.0;                                                          \
            if (STORE) ph[(J)] = eh;                                           \
        }                                                                      \
        double g = (eh + sigma) - sigma;                                       \
        ah[L] += g;                                                            \
        al[L] += (eh - g) + el;                                                \
        if (DOT) ad[L] += (eh > 0.0) ? (eh + el) * -q : 0.0; /* el: x - m error */ \
    }
    for (; j + LANES <= j1; j += LANES)
        for (int l = 0; l < LANES; l++) EXP_BODY(j + l, l)
    for (; j < j1; j++) EXP_BODY(j, 0)
#undef EXP_BODY
    for (int l = 0; l < LANES; l++) {
        acc_out->hi += ah[l];
        acc_out->lo += al[l];
        acc_out->dot += ad[l];
    }
}

/* grid 1.5 * 2^g such that C terms below 2^e_top sum exactly on it */
static double grid_sigma(double top, Py_ssize_t C) {
    int e;
    frexp(top, &e);              /* top < 2^e */
    e += 1;                      /* room for the terms' lo words */
    if (e < -900) e = -900;
    int nb = 1;
    while (((Py_ssize_t)1 << nb) < C + 1) nb++;
    return ldexp(1.5, e + nb);
}

/* L = log1p(sum_{j != k} exp(z_j)) as a double-double, z_j = (x_j - m)/t, with
 * k the argmax. The grid of the split sum is scaled to the largest such term
 * (x's second maximum *m2_out), and rows of tiny terms are summed scaled by
 * an exact 2^K. Returns S = sum (*s_out, float64) and, with DOT, the entropy
 * dot product sum_j e_j (-z_j). */
AI void rest_lse(const void *x, Py_ssize_t C, Py_ssize_t k, double m, double t, double *lh,
                 double *ll, double *m2_out, double *s_out, double *dot_out, const int DT,
                 const int HAS_T, const int USE_FMA, const int DOT) {
    double m2 = -INFINITY;
    *lh = 0.0; *ll = 0.0;
    if (s_out) *s_out = 0.0;
    if (dot_out) *dot_out = 0.0;
    if (C > 1) {
        double a = row_max(x, 0, k, NULL, DT), b = row_max(x, k + 1, C, NULL, DT);
        m2 = a > b ? a : b;
    }
    *m2_out = m2;
    if (!(m2 > -INFINITY)) return;
    double top = exp(HAS_T ? (m2 - m) / t : (m2 - m));
    if (!(top > 0.0)) return;
    int e;
    frexp(top, &e);
    int64_t K = e < -900 ? (int64_t)(-e) : 0;     /* scale tiny terms up exactly */
    if (K > 1000) K = 1000;
    double sigma = grid_sigma(ldexp(top, (int)K), C);
    sums_t s = {0.0, 0.0, 0.0};
    exp_sum(x, 0, k, m, t, sigma, K, NULL, NULL, &s, DT, HAS_T, USE_FMA, 0, DOT);
    exp_sum(x, k + 1, C, m, t, sigma, K, NULL, NULL, &s, DT, HAS_T, USE_FMA, 0, DOT);
    double shi = s.hi + s.lo;   /* TwoSum: s.hi may be 0 */
    double bb = shi - s.hi;
    double slo = (s.hi - (shi - bb)) + (s.lo - bb);
    if (K) { shi = ldexp(shi, (int)-K); slo = ldexp(slo, (int)-K); s.dot = ldexp(s.dot, (int)-K); }
    log1p_dd(shi, slo, lh, ll);
    if (s_out) *s_out = shi;
    if (dot_out) *dot_out = s.dot;
}

/* ------------------------------------------------------------------------ */
/* softmax / log-softmax over rows [r0, r1)                                  */

typedef struct {
    int64_t exp_overflow, exp_underflow, nan_entries, nan_rows, masked_rows, posinf_rows;
} stats_t;

typedef struct {
    const void *x;
    void *out;
    Py_ssize_t C;
    double t;
    int kind;       /* 0 prob, 1 logprob */
    int masked_zero;
    int64_t *argmax;
    double *ph, *pl;  /* scratch, C doubles each */
} sm_args;

/* special rows: NaN, +inf maximum, all -inf. Returns 1 if handled. */
AI int special_row(const sm_args *A, const void *x, void *o, double m, int has_nan,
                   Py_ssize_t r, stats_t *S, const int DT) {
    Py_ssize_t C = A->C;
    if (has_nan) {
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, NAN, DT);
        S->nan_entries += C; S->nan_rows++;
        if (A->argmax) {
            Py_ssize_t k = 0;
            for (Py_ssize_t j = 0; j < C; j++) { double v = ld(x, j, DT); if (v != v) { k = j; break; } }
            A->argmax[r] = k;
        }
        return 1;
    }
    if (m == INFINITY) {
        Py_ssize_t n = 0;
        for (Py_ssize_t j = 0; j < C; j++) n += ld(x, j, DT) == INFINITY;
        double p = A->kind ? (n == 1 ? 0.0 : -log((double)n)) : 1.0 / (double)n; /* +0.0 as numpy */
        double z = A->kind ? -INFINITY : 0.0;
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, ld(x, j, DT) == INFINITY ? p : z, DT);
        S->posinf_rows++;
        if (A->argmax) A->argmax[r] = first_index(x, C, m, DT);
        return 1;
    }
    if (m == -INFINITY) {
        double v = A->masked_zero ? (A->kind ? -INFINITY : 0.0) : NAN;
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, v, DT);
        S->masked_rows++;
        if (!A->masked_zero) { S->nan_entries += C; S->nan_rows++; }
        if (A->argmax) A->argmax[r] = 0;
        return 1;
    }
    return 0;
}

AI void softmax_row_prob(const sm_args *A, const void *x, void *o, double m, stats_t *S,
                         const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    double *ph = A->ph, *pl = A->pl;
    double sigma = grid_sigma(1.0, C);
    sums_t s = {0.0, 0.0, 0.0};
    exp_sum(x, 0, C, m, A->t, sigma, 0, ph, pl, &s, DT, HAS_T, USE_FMA, 1, 0);
    double shi = s.hi + s.lo;              /* Fast2Sum: s.hi >= 1 > |s.lo| */
    double slo = s.lo - (shi - s.hi);
    double inv = 1.0 / shi;
    int64_t under[LANES];
    for (int l = 0; l < LANES; l++) under[l] = 0;
    Py_ssize_t j = 0;
#define OUT_BODY(J, L)                                                          \
    {                                                                           \
        double h = ph[(J)];                                                     \
        double q = h * inv;                                                     \
        double v = q;                                                           \
        if (DT == DT_F64) {                                                     \
            double p = q * shi;                                                 \
            double rr = (h - p) - prod_err(q, shi, p, USE_FMA); /* h - q shi */ \
            v = q + ((rr + pl[(J)]) - q * slo) * inv;                           \
        }                                                                       \
        st(o, (J), v, DT);                                                      \
        under[L] += st_is_zero(v, DT) & (ld(x, (J), DT) > -INFINITY);           \
    }
    for (; j + LANES <= C; j += LANES)
        for (int l = 0; l < LANES; l++) OUT_BODY(j + l, l)
    for (; j < C; j++) OUT_BODY(j, 0)
#undef OUT_BODY
    for (int l = 0; l < LANES; l++) S->exp_underflow += under[l];
}

AI void softmax_row_log(const sm_args *A, const void *x, void *o, double m, Py_ssize_t k,
                        stats_t *S, const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    double t = A->t;
    double lh, ll, m2;
    rest_lse(x, C, k, m, t, &lh, &ll, &m2, NULL, NULL, DT, HAS_T, USE_FMA, 0);
    double lim = LOG_UNDER[DT];
    int64_t under[LANES];
    for (int l = 0; l < LANES; l++) under[l] = 0;
    Py_ssize_t j = 0;
#define LOG_BODY(J, L)                                                          \
    {                                                                           \
        double xv = ld(x, (J), DT);                                             \
        double q, c;                                                            \
        shifted(xv, m, t, &q, &c, HAS_T, USE_FMA);                              \
        double s = q - lh;                                                      \
        double bv = s - q;                                                      \
        double e1 = (q - (s - bv)) + (-lh - bv);                                \
        double v = s + ((e1 + c) - ll);                                         \
        v = (q == -INFINITY) ? -INFINITY : v;                                   \
        st(o, (J), v, DT);                                                      \
        under[L] += (v < lim) & (xv > -INFINITY);                               \
    }
    for (; j + LANES <= C; j += LANES)
        for (int l = 0; l < LANES; l++) LOG_BODY(j + l, l)
    for (; j < C; j++) LOG_BODY(j, 0)
#undef LOG_BODY
    for (int l = 0; l < LANES; l++) S->exp_underflow += under[l];
    st(o, k, -(lh + ll), DT);
}


/* ------------------------------------------------------------------------ */
/* 16/32-bit formats: single-word float64 arithmetic, rounded once          */
/*
 * Error budget (relative error of the float64 value before the one rounding
 * to the output format; 2^-44 of it costs at most 2^-20 ulp of a 24-bit
 * significand, so the result is within 0.5 + 2^-20 ulp; an exact value that
 * is subnormal in the output is < 2^-126 and gets an absolute error below
 * 2^-170, far under 2^-20 of its spacing 2^-149). u = 2^-53. Let q_j be the
 * exact (x_j - m)/t; only q_j >= -88 - ln C matter (the others give outputs
 * below 2^-126, or their sum is < C e^-88 relative to S >= 1).
 *  - q = fl(x - m) [ / t ]: |error| <= |q| u (|q| 2u with t), so exp(q) is
 *    off by <= 88 * 2u = 2^-45.5 relatively (2^-46.5 without t) for outputs
 *    >= 2^-126, and the sum S by <= 2^-46.6 (the e^q-weighted mean of |q|
 *    is < 41 for C < 2^40);
 *  - exp1: <= 2^-50;
 *  - S = sum of the exp terms: plain float64 sums in LANES lane accumulators
 *    restarted every BLK terms (<= (BLK - 1) u = 2^-47 each), the block sums
 *    added as double-doubles (TwoSum), so <= 2^-47 + 2u in all;
 *  - probabilities: e * fl(1 / S): 2 roundings, 2u.
 *    Total: 2^-45.5 + 2^-50 + 2^-46.6 + 2^-50 + 2^-47 + 2^-51 < 2^-44.4.
 *  - log-probabilities: out = q - L, L = log1p(R), R = (n_max - 1) + sum of
 *    the terms with q < 0 (n_max entries equal the maximum): both q <= 0 and
 *    -L <= 0, so the subtraction does not cancel and the relative error is at
 *    most max(err q, err L) + u. err L <= err R + err log1p (glibc: 1 ulp)
 *    since R / ((1 + R) log1p(R)) <= 1, and err R <= 2^-45.3 (terms at
 *    q >= -109 when R >= 2^-126) + 2^-50 + 2^-47 + 2u: < 2^-44.6 in all.
 */
#define BLK 64

typedef struct { double hi, lo; } dd_t;

AI void dd_add(dd_t *a, double b) {  /* TwoSum into a double-double */
    double s = a->hi + b, bv = s - a->hi;
    double e = (a->hi - (s - bv)) + (b - bv);
    a->hi = s;
    a->lo += e;
}

/* blocked lane sums of exp((x_j - m)/t) over the row; with STORE the terms go
 * to ph; with MASK the terms with q == 0 (the maxima) are left out and
 * counted in *n0. *ninf counts the -inf entries. The row is done in chunks
 * of BLK * LANES: a map loop (exp of each entry into a buffer; gcc vectorises
 * it whole) then LANES plain partial sums of <= BLK terms each. */
AI double lowp_exp_sum(const void *x, Py_ssize_t C, double m, double t, double *ph, int64_t *n0,
                       int64_t *ninf, const int DT, const int HAS_T, const int USE_FMA,
                       const int STORE, const int MASK) {
    dd_t tot[LANES];
    double buf[BLK * LANES];
    int64_t cz = 0, ci = 0;
    for (int l = 0; l < LANES; l++) tot[l].hi = tot[l].lo = 0.0;
    for (Py_ssize_t jb = 0; jb < C; jb += BLK * LANES) {
        Py_ssize_t n = C - jb < BLK * LANES ? C - jb : BLK * LANES;
        double *eb = STORE ? ph + jb : buf;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        int64_t a = 0, b = 0;
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = ld(xb, j, DT);
            double q = xv - m;
            if (HAS_T) q = q / t;
            double e = exp1(q, USE_FMA);
            if (MASK) { a += q == 0.0; e = q == 0.0 ? 0.0 : e; }
            b += xv == -INFINITY;
            eb[j] = e;
        }
        cz += a; ci += b;
        double acc[LANES];
        for (int l = 0; l < LANES; l++) acc[l] = 0.0;
        Py_ssize_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += eb[j + l];
        for (; j < n; j++) acc[0] += eb[j];
        for (int l = 0; l < LANES; l++) dd_add(&tot[l], acc[l]);
    }
    dd_t s = tot[0];
    for (int l = 1; l < LANES; l++) { dd_add(&s, tot[l].hi); s.lo += tot[l].lo; }
    if (n0) *n0 = cz;
    *ninf = ci;
    return s.hi + s.lo;
}

AI void lowp_row_prob(const sm_args *A, const void *x, void *o, double m, stats_t *S,
                      const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    double *ph = A->ph;
    int64_t ninf;
    double sum = lowp_exp_sum(x, C, m, A->t, ph, NULL, &ninf, DT, HAS_T, USE_FMA, 1, 0);
    double inv = 1.0 / sum;
    int64_t z = -ninf;  /* -inf entries are exact zeros, not underflows */
    for (Py_ssize_t j = 0; j < C; j++) {
        double v = ph[j] * inv;
        st(o, j, v, DT);
        z += st_is_zero(v, DT);
    }
    S->exp_underflow += z;
}

AI void lowp_row_log(const sm_args *A, const void *x, void *o, double m, stats_t *S,
                     const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    double t = A->t;
    int64_t n0, ninf;
    double rest = lowp_exp_sum(x, C, m, t, NULL, &n0, &ninf, DT, HAS_T, USE_FMA, 0, 1);
    double L = log1p((double)(n0 - 1) + rest);
    double lim = LOG_UNDER[DT];
    int64_t z = -ninf;
    for (Py_ssize_t j = 0; j < C; j++) {
        double q = ld(x, j, DT) - m;
        if (HAS_T) q = q / t;
        double v = -(L - q); /* = q - L; -0.0 for the max of a one-entry row */
        st(o, j, v, DT);
        z += v < lim;
    }
    S->exp_underflow += z;
}

/* Narrow rows (C <= NARROW_C) of 16/32-bit formats: blocks of NR rows, with
 * the exp and output loops running over the flattened block (the row's max,
 * 1/S or L expanded per entry) so they vectorise across rows; the row sums are
 * plain sums of <= NARROW_C terms (<= 15 u, inside the budget above).
 * Special rows (NaN, +-inf max) get NaN in the flat loops (not counted as
 * underflows) and are then rewritten by special_row. */
#define NARROW_C 16
#define NR 64
AI void lowp_narrow_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int DT,
                      const int HAS_T, const int USE_FMA, const int KIND) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    double t = A->t;
    double mm[NR * NARROW_C], vv[NR * NARROW_C], eb[NR * NARROW_C], rm[NR], rv[NR];
    unsigned char sp[NR];
    for (Py_ssize_t rb = r0; rb < r1; rb += NR) {
        Py_ssize_t nr = r1 - rb < NR ? r1 - rb : NR;
        Py_ssize_t n = nr * C;
        const char *xb = (const char *)A->x + (size_t)rb * C * isz;
        char *ob = (char *)A->out + (size_t)rb * C * isz;
        int nsp = 0;
        for (Py_ssize_t r = 0; r < nr; r++) {
            int has_nan;
            double m = row_max(xb + (size_t)r * C * isz, 0, C, &has_nan, DT);
            sp[r] = has_nan || !(m - m == 0.0);
            nsp += sp[r];
            rm[r] = sp[r] ? NAN : m;
        }
        for (Py_ssize_t r = 0; r < nr; r++)
            for (Py_ssize_t j = 0; j < C; j++) mm[r * C + j] = rm[r];
        for (Py_ssize_t i = 0; i < n; i++) {
            double q = ld(xb, i, DT) - mm[i];
            if (HAS_T) q = q / t;
            double e = exp1(q, USE_FMA);
            if (KIND) e = q == 0.0 ? 0.0 : e;
            eb[i] = e;
        }
        int64_t ninf = 0;
        for (Py_ssize_t r = 0; r < nr; r++) {
            const char *xr = xb + (size_t)r * C * isz;
            double sum = 0.0;
            int64_t n0 = 0;
            for (Py_ssize_t j = 0; j < C; j++) {
                double xv = ld(xr, j, DT);
                sum += eb[r * C + j];
                n0 += xv == rm[r];
                ninf += (xv == -INFINITY) & !sp[r];
            }
            rv[r] = KIND ? log1p((double)(n0 - 1) + sum) : 1.0 / sum;
        }
        for (Py_ssize_t r = 0; r < nr; r++)
            for (Py_ssize_t j = 0; j < C; j++) vv[r * C + j] = rv[r];
        int64_t under = -ninf;
        double lim = LOG_UNDER[DT];
        for (Py_ssize_t i = 0; i < n; i++) {
            double v;
            if (KIND) {
                double q = ld(xb, i, DT) - mm[i];
                if (HAS_T) q = q / t;
                v = -(vv[i] - q);
                under += v < lim;
            } else {
                v = eb[i] * vv[i];
                under += st_is_zero(v, DT);
            }
            st(ob, i, v, DT);
        }
        S->exp_underflow += under;
        for (Py_ssize_t r = 0; r < nr; r++) {
            const char *xr = xb + (size_t)r * C * isz;
            if (sp[r]) {
                int has_nan;
                double m = row_max(xr, 0, C, &has_nan, DT);
                special_row(A, xr, ob + (size_t)r * C * isz, m, has_nan, rb + r, S, DT);
            } else if (A->argmax) {
                A->argmax[rb + r] = first_index(xr, C, rm[r], DT);
            }
        }
    }
}

AI void softmax_rows_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int DT,
                       const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    if (DT != DT_F64 && C <= NARROW_C) {
        if (A->kind) lowp_narrow_t(A, r0, r1, S, DT, HAS_T, USE_FMA, 1);
        else lowp_narrow_t(A, r0, r1, S, DT, HAS_T, USE_FMA, 0);
        return;
    }
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        char *o = (char *)A->out + (size_t)r * C * isz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        if (special_row(A, x, o, m, has_nan, r, S, DT)) continue;
        if (DT != DT_F64) {
            if (A->kind == 0) lowp_row_prob(A, x, o, m, S, DT, HAS_T, USE_FMA);
            else lowp_row_log(A, x, o, m, S, DT, HAS_T, USE_FMA);
            if (A->argmax) A->argmax[r] = first_index(x, C, m, DT);
        } else if (A->kind == 0) {
            softmax_row_prob(A, x, o, m, S, DT, HAS_T, USE_FMA);
            if (A->argmax) A->argmax[r] = first_index(x, C, m, DT);
        } else {
            Py_ssize_t k = first_index(x, C, m, DT);
            softmax_row_log(A, x, o, m, k, S, DT, HAS_T, USE_FMA);
            if (A->argmax) A->argmax[r] = k;
        }
    }
}

#define DISPATCH_DT(FN, ...)                                                    \
    switch (dt) {                                                               \
    case DT_F16: FN(__VA_ARGS__, DT_F16, USE_FMA); break;                       \
    case DT_BF16: FN(__VA_ARGS__, DT_BF16, USE_FMA); break;                     \
    case DT_F32: FN(__VA_ARGS__, DT_F32, USE_FMA); break;                       \
    default: FN(__VA_ARGS__, DT_F64, USE_FMA); break;                           \
    }

AI void softmax_rows_dt(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int DT,
                       const int USE_FMA) {
    if (A->t != 1.0) softmax_rows_t(A, r0, r1, S, DT, 1, USE_FMA);
    else softmax_rows_t(A, r0, r1, S, DT, 0, USE_FMA);
}

AI void softmax_rows_kernel_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, int dt,
                              const int USE_FMA) {
    DISPATCH_DT(softmax_rows_dt, A, r0, r1, S)
}
VARIANTS(softmax_rows_kernel, (const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, int dt),
         A, r0, r1, S, dt)

/* ------------------------------------------------------------------------ */
/* logsumexp                                                                 */

typedef struct {
    const void *x;
    void *out;
    int out_dt;
    Py_ssize_t C;
    double t;
} lse_args;

AI void lse_rows_t(const lse_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT, const int HAS_T,
                   const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    double t = A->t;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        int has_nan;
        double m = C ? row_max(x, 0, C, &has_nan, DT) : -INFINITY;
        double v;
        if (C == 0) v = -INFINITY;
        else if (has_nan) v = NAN;
        else if (!isfinite(m)) v = m;
        else {
            Py_ssize_t k = first_index(x, C, m, DT);
            double m2, lh, ll;
            rest_lse(x, C, k, m, t, &lh, &ll, &m2, NULL, NULL, DT, HAS_T, USE_FMA, 0);
            /* m / t as mq + mr */
            double mq = m, mr = 0.0;
            if (HAS_T) {
                mq = m / t;
                double p = mq * t;
                mr = ((m - p) - prod_err(mq, t, p, USE_FMA)) / t;
                mr = (mr - mr == 0.0) ? mr : 0.0;  /* Dekker overflow (see shifted) */
            }
            double s = mq + lh, bv = s - mq;
            double e = (mq - (s - bv)) + (lh - bv);
            v = s + (e + (mr + ll));
        }
        st(A->out, r, v, A->out_dt == DT_F64 ? DT_F64 : DT);
    }
}

AI void lse_rows_dt(const lse_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT,
                   const int USE_FMA) {
    if (A->t != 1.0) lse_rows_t(A, r0, r1, DT, 1, USE_FMA);
    else lse_rows_t(A, r0, r1, DT, 0, USE_FMA);
}

AI void lse_rows_kernel_t(const lse_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt, const int USE_FMA) {
    DISPATCH_DT(lse_rows_dt, A, r0, r1)
}
VARIANTS(lse_rows_kernel, (const lse_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt), A, r0, r1, dt)

/* ------------------------------------------------------------------------ */
/* cross-entropy with class indices, one sweep per row                      */

typedef struct {
    const void *x;
    Py_ssize_t C;
    const int64_t *target;
    const double *weight;  /* NULL: 1 */
    double wsum;           /* sum of weights (smoothing) */
    int64_t ignore_index;
    double eps;
    double *loss, *logp_true, *p_true, *margin, *entropy;
    int64_t *argmax;
    uint8_t *top5, *fallback;
} xe_args;

/* One sweep of a 16/32-bit row for the cross-entropy (after the max pass):
 * R = sum_{x_j < m} exp(x_j - m) (+ the n_max - 1 other maxima) as a
 * double-double, the entropy dot sum_j e_j (m - x_j), the second maximum, the
 * first index of the maximum and the count of entries above x_y (top-5).
 * d = x - m keeps its rounding error c (TwoSum) folded as e (1 + c); the terms
 * (exp1: <= 1.1 ulp with FMA) are summed in LANES lanes restarted every XBLK
 * terms (<= (XBLK - 1) u) with double-double block totals. */
#define XBLK 4
AI void lowp_xent_sweep(const void *x, Py_ssize_t C, double m, double xy, double *rh, double *rl,
                        double *dot, double *m2, Py_ssize_t *kfirst, int64_t *above,
                        const int DT, const int USE_FMA) {
    dd_t tot[LANES];
    double dsum[LANES];
    for (int l = 0; l < LANES; l++) { tot[l].hi = tot[l].lo = 0.0; dsum[l] = 0.0; }
    int64_t n0 = 0, ab = 0, k2 = order_key((int64_t)asu64(-INFINITY)), kf = C;
    double eb[XBLK * LANES], db[XBLK * LANES];
    for (Py_ssize_t jb = 0; jb < C; jb += XBLK * LANES) {
        Py_ssize_t n = C - jb < XBLK * LANES ? C - jb : XBLK * LANES;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = ld(xb, j, DT);
            double d = xv - m, bv = d - xv;
            double c = (xv - (d - bv)) + (-m - bv);   /* TwoSum(x, -m) error */
            double e = exp1(d, USE_FMA);
            int z = d == 0.0;
            e = (z | (d < -708.0)) ? 0.0 : FMA_(e, c, e, USE_FMA);
            eb[j] = e;
            db[j] = e > 0.0 ? e * -d : 0.0;
            n0 += z;
            ab += xv > xy;
            double v2 = z ? -INFINITY : xv;   /* (this form vectorises) */
            int64_t key = order_key((int64_t)asu64(v2));
            k2 = key > k2 ? key : k2;
            int64_t kk = z ? (int64_t)(jb + j) : (int64_t)C;
            kf = kk < kf ? kk : kf;
        }
        double acc[LANES];
        for (int l = 0; l < LANES; l++) acc[l] = 0.0;
        Py_ssize_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) { acc[l] += eb[j + l]; dsum[l] += db[j + l]; }
        for (; j < n; j++) { acc[0] += eb[j]; dsum[0] += db[j]; }
        for (int l = 0; l < LANES; l++) dd_add(&tot[l], acc[l]);
    }
    dd_t sm = {(double)(n0 - 1), 0.0};
    double ds = 0.0;
    for (int l = 0; l < LANES; l++) { dd_add(&sm, tot[l].hi); sm.lo += tot[l].lo; ds += dsum[l]; }
    double hi = sm.hi + sm.lo;
    *rl = sm.lo - (hi - sm.hi);
    *rh = hi;
    *dot = ds;
    *m2 = n0 > 1 ? m : asf64((uint64_t)order_key(k2));
    *kfirst = kf;
    *above = ab;
}

AI void xent_rows_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                    const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    Py_ssize_t k5 = C < 5 ? C : 5;
    double eps = A->eps;
    const double *w = A->weight;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        if (has_nan || !isfinite(m)) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        int64_t y = A->target[r];
        Py_ssize_t k;
        double m2, lh, ll, shi, dot;
        int64_t above = -1;
        if (DT != DT_F64) {
            double xy0 = y == A->ignore_index ? INFINITY : ld(x, y, DT);
            double slo;
            lowp_xent_sweep(x, C, m, xy0, &shi, &slo, &dot, &m2, &k, &above, DT, USE_FMA);
            log1p_dd(shi, slo, &lh, &ll);
        } else {
            k = first_index(x, C, m, DT);
            rest_lse(x, C, k, m, 1.0, &lh, &ll, &m2, &shi, &dot, DT, 0, USE_FMA, 1);
        }
        A->argmax[r] = k;
        A->entropy[r] = (lh + ll) + dot / (1.0 + shi);
        if (y == A->ignore_index) {
            A->loss[r] = 0.0;
            A->logp_true[r] = NAN;
            A->p_true[r] = NAN;
            A->margin[r] = NAN;
            A->top5[r] = 0;
            continue;
        }
        double lpy, zy;
        double xy = ld(x, y, DT);
        {
            double q, c;
            shifted(xy, m, 1.0, &q, &c, 0, USE_FMA);
            zy = q + c;
            double s = q - lh, bv = s - q;
            double e1 = (q - (s - bv)) + (-lh - bv);
            lpy = (y == k) ? -(lh + ll) : s + ((e1 + c) - ll);
            if (q == -INFINITY) lpy = -INFINITY;
        }
        A->logp_true[r] = lpy;
        A->p_true[r] = exp(lpy);
        double wy = w ? w[y] : 1.0;
        double loss = (wy > 0.0) ? -(wy * lpy) : 0.0;
        if (eps > 0.0) {
            /* sum_c w_c (-logp_c) = L W + sum_c w_c (-z_c), every term >= 0 */
            double acc[LANES];
            for (int l = 0; l < LANES; l++) acc[l] = 0.0;
            Py_ssize_t j = 0;
            for (; j + LANES <= C; j += LANES)
                for (int l = 0; l < LANES; l++) {
                    double wc = w ? w[j + l] : 1.0;
                    double nz = m - ld(x, j + l, DT);
                    acc[l] += wc > 0.0 ? wc * nz : 0.0;
                }
            double sm = 0.0;
            for (; j < C; j++) {
                double wc = w ? w[j] : 1.0;
                double nz = m - ld(x, j, DT);
                sm += wc > 0.0 ? wc * nz : 0.0;
            }
            for (int l = 0; l < LANES; l++) sm += acc[l];
            double smooth = (lh + ll) * A->wsum + sm;
            double nll_part = (wy > 0.0) ? (1.0 - eps) * (wy * -lpy) : 0.0;
            loss = nll_part + (eps / (double)C) * smooth;
        }
        A->loss[r] = 0.0 + loss;
        /* top-5: fewer than k5 classes strictly above the true one */
        if (above < 0) {
            above = 0;
            for (Py_ssize_t j = 0; j < C; j++) above += ld(x, j, DT) > xy;
        }
        A->top5[r] = above < k5;
        if (C == 1) A->margin[r] = NAN;
        else if (y == k) {
            double q, c;
            shifted(m2, m, 1.0, &q, &c, 0, USE_FMA);
            A->margin[r] = -(q + c);
        } else A->margin[r] = zy;
    }
}

AI void xent_rows_kernel_t(const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                          const int USE_FMA) {
    DISPATCH_DT(xent_rows_t, A, r0, r1, nfb)
}
VARIANTS(xent_rows_kernel, (const xe_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

/* ------------------------------------------------------------------------ */
/* cross-entropy with probability targets, one sweep per row                */
/*
 * PyTorch's loss for probability targets t (N, C) with class weights w and
 * label smoothing eps: loss = -sum_c a_c logp_c, a_c = w_c ((1 - eps) t_c +
 * eps / C). With m the row's maximum and L = log(sum_c exp(x_c - m)) =
 * log1p(R), -logp_c = (m - x_c) + L, so
 *     loss = sum_c a_c (m - x_c) + L sum_c a_c,
 * two sums of non-negative terms (t >= 0, w >= 0; a row with a negative or NaN
 * target is handed back to the numpy reference): nothing cancels. The plain
 * cross-entropy nll = -sum_c t_c logp_c is the same with a = t.
 * Error budget of the loss (relative, u = 2^-53): a_c <= 5u (eps / C, 1 - eps,
 * the product, the sum, w_c), (m - x_c) u, the product u; the sums of
 * non-negative terms in LANES lanes restarted every XBLK terms with
 * double-double block totals 3u: sum_c a_c (m - x_c) <= 10u, sum_c a_c <= 8u;
 * L: R from exp1 (<= 1.1 ulp with FMA, the x - m error folded), lane sums
 * (3u) and log1p_dd, <= 6u (float64 logits: rest_lse's L, <= 2u); the product
 * and the final sum u each: <= 16u = 8 ulp in all (stated: 16 ulp).
 * The residual max_c |p_c - a_c / A| (A = sum_c a_c) is a difference of two
 * numbers in [0, 1] each within ~10u relative: <= 12u absolute.
 */
typedef struct {
    const void *x;
    Py_ssize_t C;
    const void *t;          /* float64 (t64 = 1) or float32 targets, (N, C) */
    int t64;
    const double *weight;   /* NULL: 1 */
    double eps;
    double *loss, *nll, *logp_true, *p_true, *margin, *entropy, *residual;
    int64_t *argmax, *true_class;
    uint8_t *top5, *fallback;
    double *eb;             /* scratch, C doubles */
} xp_args;

AI double ldt(const void *t, Py_ssize_t j, const int T64) {
    return T64 ? ((const double *)t)[j] : (double)((const float *)t)[j];
}

/* first index of the maximum of the targets (NaN: ignored here, flagged by
 * the sweep) */
AI Py_ssize_t target_argmax(const void *t, Py_ssize_t C, const int T64) {
    int64_t km = INT64_MIN;  /* the max on integer keys (see row_max): it vectorises */
    for (Py_ssize_t j = 0; j < C; j++) {
        int64_t key = order_key((int64_t)asu64(ldt(t, j, T64)));
        km = key > km ? key : km;
    }
    double tm = asf64((uint64_t)order_key(km));
    int64_t kf = C;
    for (Py_ssize_t j = 0; j < C; j++) {
        int64_t kk = ldt(t, j, T64) == tm ? (int64_t)j : (int64_t)C;
        kf = kk < kf ? kk : kf;
    }
    return kf < C ? (Py_ssize_t)kf : 0;
}

typedef struct {
    dd_t r, a, da, st, dt;
    double dot, m2;
    int64_t n0, above, kfirst, bad, inf_a, inf_t;  /* inf_*: a (or t) > 0 on m - x = inf */
} xp_sums;

/* the sweep of one row (after the max pass): e_j = exp(x_j - m) into eb
 * (unmasked), R = sum of the terms with x_j < m, the entropy dot, sum a,
 * sum a (m - x), sum t, sum t (m - x), the second maximum, the first index of
 * the maximum, the count of entries above xy, and whether a target is
 * negative or NaN */
AI void xp_sweep(const xp_args *A, const void *x, const void *t, double m, double xy,
                 xp_sums *S, const int DT, const int T64, const int HAS_W, const int USE_FMA) {
    Py_ssize_t C = A->C;
    const double *w = A->weight;
    double *ebuf = A->eb;
    double k1 = 1.0 - A->eps, k0 = A->eps / (double)C;
    dd_t tot[5][LANES];
    double dsum[LANES];
    for (int l = 0; l < LANES; l++) {
        for (int q = 0; q < 5; q++) tot[q][l].hi = tot[q][l].lo = 0.0;
        dsum[l] = 0.0;
    }
    int64_t n0 = 0, ab = 0, bad = 0, ia = 0, it = 0, k2 = order_key((int64_t)asu64(-INFINITY)), kf = C;
    double bufs[5][XBLK * LANES], db[XBLK * LANES];
    for (Py_ssize_t jb = 0; jb < C; jb += XBLK * LANES) {
        Py_ssize_t n = C - jb < XBLK * LANES ? C - jb : XBLK * LANES;
        const char *xb = (const char *)x + (size_t)jb * ITEMSIZE[DT];
        const char *tb = (const char *)t + (size_t)jb * (T64 ? 8 : 4);
        for (Py_ssize_t j = 0; j < n; j++) {
            double xv = ld(xb, j, DT);
            double d = xv - m, bv = d - xv;
            double c = (xv - (d - bv)) + (-m - bv);   /* TwoSum(x, -m) error */
            double e = exp1(d, USE_FMA);
            int z = d == 0.0;
            e = (d < -708.0) ? 0.0 : FMA_(e, c, e, USE_FMA);
            ebuf[jb + j] = e;
            double es = z ? 0.0 : e;
            bufs[0][j] = es;
            db[j] = es > 0.0 ? es * -d : 0.0;
            double tv = ldt(tb, j, T64);
            double a = FMA_(k1, tv, k0, 0);
            if (HAS_W) a *= w[jb + j];
            double nz = m - xv;
            bufs[1][j] = a;
            int fin = nz < INFINITY;   /* m - x = inf: an infinite loss, counted apart */
            ia += (a > 0.0) & !fin;
            it += (tv > 0.0) & !fin;
            bufs[2][j] = (a > 0.0) & fin ? a * nz : 0.0;
            bufs[3][j] = tv;
            bufs[4][j] = (tv > 0.0) & fin ? tv * nz : 0.0;
            bad += !(tv >= 0.0);
            n0 += z;
            ab += xv > xy;
            double v2 = z ? -INFINITY : xv;
            int64_t key = order_key((int64_t)asu64(v2));
            k2 = key > k2 ? key : k2;
            int64_t kk = z ? (int64_t)(jb + j) : (int64_t)C;
            kf = kk < kf ? kk : kf;
        }
        for (int q = 0; q < 5; q++) {
            double acc[LANES];
            for (int l = 0; l < LANES; l++) acc[l] = 0.0;
            Py_ssize_t j = 0;
            for (; j + LANES <= n; j += LANES)
                for (int l = 0; l < LANES; l++) acc[l] += bufs[q][j + l];
            for (; j < n; j++) acc[0] += bufs[q][j];
            for (int l = 0; l < LANES; l++) dd_add(&tot[q][l], acc[l]);
        }
        Py_ssize_t j = 0;
        for (; j + LANES <= n; j += LANES)
            for (int l = 0; l < LANES; l++) dsum[l] += db[j + l];
        for (; j < n; j++) dsum[0] += db[j];
    }
    dd_t *outs[5] = {&S->r, &S->a, &S->da, &S->st, &S->dt};
    for (int q = 0; q < 5; q++) {
        dd_t s = {0.0, 0.0};
        for (int l = 0; l < LANES; l++) { dd_add(&s, tot[q][l].hi); s.lo += tot[q][l].lo; }
        double hi = s.hi + s.lo;
        outs[q]->lo = s.lo - (hi - s.hi);
        outs[q]->hi = hi;
    }
    double ds = 0.0;
    for (int l = 0; l < LANES; l++) ds += dsum[l];
    S->dot = ds;
    S->n0 = n0;
    S->above = ab;
    S->kfirst = kf;
    S->bad = bad;
    S->inf_a = ia;
    S->inf_t = it;
    S->m2 = n0 > 1 ? m : asf64((uint64_t)order_key(k2));
}

/* max_c |e_c inv - a_c inv_a| over the row (every term finite and >= 0: the
 * maximum is taken on the float64 bits, an integer reduction that vectorises) */
AI double xp_residual(const xp_args *A, const void *t, double inv, double inv_a, const int T64,
                       const int HAS_W) {
    Py_ssize_t C = A->C;
    const double *w = A->weight, *ebuf = A->eb;
    double k1 = 1.0 - A->eps, k0 = A->eps / (double)C;
    int64_t best = 0;
    for (Py_ssize_t j = 0; j < C; j++) {
        double a = FMA_(k1, ldt(t, j, T64), k0, 0);
        if (HAS_W) a *= w[j];
        double v = fabs(ebuf[j] * inv - a * inv_a);
        int64_t key = (int64_t)asu64(v);
        best = key > best ? key : best;
    }
    return asf64((uint64_t)best);
}

AI void xp_rows_tt(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                   const int T64, const int HAS_W, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT], tsz = T64 ? 8 : 4;
    Py_ssize_t k5 = C < 5 ? C : 5;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const char *t = (const char *)A->t + (size_t)r * C * tsz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        Py_ssize_t y = target_argmax(t, C, T64);
        A->true_class[r] = y;
        if (has_nan || !isfinite(m)) { A->fallback[r] = 1; (*nfb)++; continue; }
        double xy = ld(x, y, DT);
        xp_sums S;
        xp_sweep(A, x, t, m, xy, &S, DT, T64, HAS_W, USE_FMA);
        if (S.bad) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        double lh, ll, shi, dot;
        Py_ssize_t k = (Py_ssize_t)S.kfirst;
        if (DT != DT_F64) {
            dd_t R = {(double)(S.n0 - 1), 0.0};
            dd_add(&R, S.r.hi);
            R.lo += S.r.lo;
            shi = R.hi + R.lo;
            double slo = R.lo - (shi - R.hi);
            log1p_dd(shi, slo, &lh, &ll);
            dot = S.dot;
        } else {
            double m2;
            rest_lse(x, C, k, m, 1.0, &lh, &ll, &m2, &shi, &dot, DT, 0, USE_FMA, 1);
        }
        double L = lh + ll;
        A->argmax[r] = k;
        A->entropy[r] = L + dot / (1.0 + shi);
        /* loss = sum a (m - x) + L sum a; nll the same with a = t */
        double asum = S.a.hi + S.a.lo, tsum = S.st.hi + S.st.lo;
        A->loss[r] = S.inf_a ? INFINITY
                             : (S.da.hi + (S.da.lo + FMA_(lh, asum, ll * asum, USE_FMA))) + 0.0;
        A->nll[r] = S.inf_t ? INFINITY
                            : (S.dt.hi + (S.dt.lo + FMA_(lh, tsum, ll * tsum, USE_FMA))) + 0.0;
        A->residual[r] = asum > 0.0 ? xp_residual(A, t, 1.0 / (1.0 + shi), 1.0 / asum, T64, HAS_W)
                                    : NAN;
        double q, c;
        shifted(xy, m, 1.0, &q, &c, 0, USE_FMA);
        double s = q - lh, bv = s - q;
        double e1 = (q - (s - bv)) + (-lh - bv);
        double lpy = (y == k) ? -L : s + ((e1 + c) - ll);
        if (q == -INFINITY) lpy = -INFINITY;
        A->logp_true[r] = lpy;
        A->p_true[r] = exp(lpy);
        A->top5[r] = S.above < k5;
        if (C == 1) A->margin[r] = NAN;
        else if (y == k) {
            double q2, c2;
            shifted(S.m2, m, 1.0, &q2, &c2, 0, USE_FMA);
            A->margin[r] = -(q2 + c2);
        } else A->margin[r] = q + c;
    }
}

AI void xp_rows_t(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                  const int USE_FMA) {
    if (A->t64) {
        if (A->weight) xp_rows_tt(A, r0, r1, nfb, DT, 1, 1, USE_FMA);
        else xp_rows_tt(A, r0, r1, nfb, DT, 1, 0, USE_FMA);
    } else {
        if (A->weight) xp_rows_tt(A, r0, r1, nfb, DT, 0, 1, USE_FMA);
        else xp_rows_tt(A, r0, r1, nfb, DT, 0, 0, USE_FMA);
    }
}

AI void xp_rows_kernel_t(const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                         const int USE_FMA) {
    DISPATCH_DT(xp_rows_t, A, r0, r1, nfb)
}
VARIANTS(xp_rows_kernel, (const xp_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

/* ------------------------------------------------------------------------ */
/* vector-Jacobian products of softmax and log-softmax                      */
/*
 * softmax:     out_j = p_j (g_j - s) / t,   s = sum_k g_k p_k
 * log-softmax: out_j = (g_j - p_j G) / t,   G = sum_k g_k
 * p as the softmax kernels compute it (float64: <= 1.5 ulp; 16/32-bit inputs:
 * relative error < 2^-44.4), in float64 scratch; s and G are compensated sums
 * (each product's exact error by FMA / Dekker, TwoSum into LANES lane
 * double-doubles), error u |s| + O(C u^2) sum |g_k p_k|. Per entry (u = 2^-53):
 * softmax |err| <= 3u |p_j (g_j - s)| (p) + 2u |out_j| + p_j (u |s| + 3u <|g|, p>)
 * + u |out_j| (the division), so <= 8 ulp (|out_j| + p_j <|g|, p> / t);
 * log-softmax likewise <= 8 ulp (|out_j| + p_j sum|g| / t). 16/32-bit inputs:
 * the same with 2^-43 for 8 ulp, then one rounding to the format. Rows with a
 * NaN, a non-finite maximum or a non-finite g are handed back (numpy).
 */
typedef struct {
    const void *x;
    const double *g;
    void *out;
    Py_ssize_t C;
    double t;
    int kind;            /* 0 softmax, 1 log-softmax */
    double *ph, *pl;     /* scratch, C doubles each */
    uint8_t *fallback;
} vj_args;

AI void vjp_rows_t(const vj_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                   const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    double t = A->t;
    double *p = A->ph, *pl = A->pl;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        const double *g = A->g + (size_t)r * C;
        char *o = (char *)A->out + (size_t)r * C * isz;
        int has_nan;
        double m = row_max(x, 0, C, &has_nan, DT);
        int64_t gbad = 0;
        for (Py_ssize_t j = 0; j < C; j++) gbad += !(g[j] - g[j] == 0.0);
        if (has_nan || !isfinite(m) || gbad) { A->fallback[r] = 1; (*nfb)++; continue; }
        A->fallback[r] = 0;
        if (DT != DT_F64) {
            int64_t ninf;
            double sum = lowp_exp_sum(x, C, m, t, p, NULL, &ninf, DT, HAS_T, USE_FMA, 1, 0);
            double inv = 1.0 / sum;
            for (Py_ssize_t j = 0; j < C; j++) p[j] *= inv;
        } else {
            double sigma = grid_sigma(1.0, C);
            sums_t s = {0.0, 0.0, 0.0};
            exp_sum(x, 0, C, m, t, sigma, 0, p, pl, &s, DT, HAS_T, USE_FMA, 1, 0);
            double shi = s.hi + s.lo;
            double slo = s.lo - (shi - s.hi);
            double inv = 1.0 / shi;
            for (Py_ssize_t j = 0; j < C; j++) {
                double h = p[j], q = h * inv, pp = q * shi;
                double rr = (h - pp) - prod_err(q, shi, pp, USE_FMA);
                p[j] = q + ((rr + pl[j]) - q * slo) * inv;
            }
        }
        /* s = <g, p> (softmax) or G = sum g (log-softmax), compensated */
        double sh[LANES], sl[LANES];
        for (int l = 0; l < LANES; l++) { sh[l] = 0.0; sl[l] = 0.0; }
        Py_ssize_t j = 0;
#define VJ_SUM(J, L)                                                            \
        {                                                                       \
            double v = g[(J)], e = 0.0;                                         \
            if (A->kind == 0) {                                                 \
                double gp = v * p[(J)];                                         \
                e = prod_err(v, p[(J)], gp, USE_FMA);                           \
                e = (e - e == 0.0) ? e : 0.0; /* Dekker overflow (baseline) */  \
                v = gp;                                                         \
            }                                                                   \
            double s2 = sh[L] + v, bv = s2 - sh[L];                             \
            sl[L] += ((sh[L] - (s2 - bv)) + (v - bv)) + e;                      \
            sh[L] = s2;                                                         \
        }
        for (; j + LANES <= C; j += LANES)
            for (int l = 0; l < LANES; l++) VJ_SUM(j + l, l)
        for (; j < C; j++) VJ_SUM(j, 0)
#undef VJ_SUM
        dd_t tot = {0.0, 0.0};
        for (int l = 0; l < LANES; l++) { dd_add(&tot, sh[l]); tot.lo += sl[l]; }
        double S = tot.hi + tot.lo;
        if (A->kind == 0) {
            for (Py_ssize_t k = 0; k < C; k++) {
                double v = p[k] * (g[k] - S);
                if (HAS_T) v = v / t;
                st(o, k, v, DT);
            }
        } else {
            for (Py_ssize_t k = 0; k < C; k++) {
                double v = g[k] - p[k] * S;
                if (HAS_T) v = v / t;
                st(o, k, v, DT);
            }
        }
    }
}

AI void vjp_rows_dt(const vj_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, const int DT,
                    const int USE_FMA) {
    if (A->t != 1.0) vjp_rows_t(A, r0, r1, nfb, DT, 1, USE_FMA);
    else vjp_rows_t(A, r0, r1, nfb, DT, 0, USE_FMA);
}

AI void vjp_rows_kernel_t(const vj_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt,
                          const int USE_FMA) {
    DISPATCH_DT(vjp_rows_dt, A, r0, r1, nfb)
}
VARIANTS(vjp_rows_kernel, (const vj_args *A, Py_ssize_t r0, Py_ssize_t r1, int64_t *nfb, int dt),
         A, r0, r1, nfb, dt)

/* ------------------------------------------------------------------------ */
/* Python glue                                                               */

static int check_rows(int dt, Py_ssize_t n, Py_ssize_t c, Py_ssize_t r0, Py_ssize_t r1) {
    if (dt < 0 || dt > 3) { PyErr_SetString(PyExc_ValueError, "bad dtype code"); return -1; }
    if (n < 0 || c < 0 || r0 < 0 || r1 > n || r0 > r1) {
        PyErr_SetString(PyExc_ValueError, "bad shape or row range");
        return -1;
    }
    return 0;
}

/* softmax(x, out, dt, n, c, kind, t, masked_zero, r0, r1, argmax|None) -> stats tuple */
static PyObject *py_softmax(PyObject *self, PyObject *args) {
    PyObject *xo, *oo, *ao;
    int dt, kind, mz;
    Py_ssize_t n, c, r0, r1;
    double t;
    if (!PyArg_ParseTuple(args, "OOinnidinnO", &xo, &oo, &dt, &n, &c, &kind, &t, &mz, &r0, &r1, &ao))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    Py_ssize_t need = n * c * ITEMSIZE[dt];
    Py_buffer xb, ob, ab;
    int have_a = ao != Py_None;
    if (get_buf(xo, &xb, 0, need, "x") < 0) return NULL;
    if (get_buf(oo, &ob, 1, need, "out") < 0) { PyBuffer_Release(&xb); return NULL; }
    if (have_a && get_buf(ao, &ab, 1, n * 8, "argmax") < 0) {
        PyBuffer_Release(&xb); PyBuffer_Release(&ob); return NULL;
    }
    stats_t S = {0, 0, 0, 0, 0, 0};
    double *scratch = NULL;
    if (kind == 0 && c > 0) {
        scratch = (double *)malloc(sizeof(double) * 2 * (size_t)c);
        if (!scratch) {
            PyBuffer_Release(&xb); PyBuffer_Release(&ob);
            if (have_a) PyBuffer_Release(&ab);
            return PyErr_NoMemory();
        }
    }
    sm_args A = {xb.buf, ob.buf, c, t, kind, mz, have_a ? (int64_t *)ab.buf : NULL,
                 scratch, scratch ? scratch + c : NULL};
    if (c > 0) {
        Py_BEGIN_ALLOW_THREADS
        softmax_rows_kernel(&A, r0, r1, &S, dt);
        Py_END_ALLOW_THREADS
    }
    free(scratch);
    PyBuffer_Release(&xb); PyBuffer_Release(&ob);
    if (have_a) PyBuffer_Release(&ab);
    return Py_BuildValue("(LLLLLL)", (long long)S.exp_overflow, (long long)S.exp_underflow,
                         (long long)S.nan_entries, (long long)S.nan_rows,
                         (long long)S.masked_rows, (long long)S.posinf_rows);
}

/* logsumexp(x, out, dt, out_dt, n, c, t, r0, r1) */
static PyObject *py_logsumexp(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int dt, odt;
    Py_ssize_t n, c, r0, r1;
    double t;
    if (!PyArg_ParseTuple(args, "OOiinndnn", &xo, &oo, &dt, &odt, &n, &c, &t, &r0, &r1)) return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (odt != dt && odt != DT_F64) { PyErr_SetString(PyExc_ValueError, "bad out dtype"); return NULL; }
    Py_buffer xb, ob;
    if (get_buf(xo, &xb, 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    if (get_buf(oo, &ob, 1, n * ITEMSIZE[odt], "out") < 0) { PyBuffer_Release(&xb); return NULL; }
    lse_args A = {xb.buf, ob.buf, odt, c, t};
    Py_BEGIN_ALLOW_THREADS
    lse_rows_kernel(&A, r0, r1, dt);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&xb); PyBuffer_Release(&ob);
    Py_RETURN_NONE;
}

/* xent(x, dt, n, c, target, weight|None, wsum, ignore_index, eps, r0, r1,
 *      loss, logp_true, p_true, argmax, top5, margin, entropy, fallback) -> n_fallback */
static PyObject *py_xent(PyObject *self, PyObject *args) {
    PyObject *xo, *to, *wo, *outs[8];
    int dt;
    Py_ssize_t n, c, r0, r1;
    long long ign;
    double wsum, eps;
    if (!PyArg_ParseTuple(args, "OinnOOdLdnnOOOOOOOO", &xo, &dt, &n, &c, &to, &wo, &wsum, &ign, &eps,
                          &r0, &r1, &outs[0], &outs[1], &outs[2], &outs[3], &outs[4], &outs[5],
                          &outs[6], &outs[7]))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (c < 1) { PyErr_SetString(PyExc_ValueError, "no classes"); return NULL; }
    Py_buffer bufs[11];
    int nb = 0, ok = 1;
    Py_ssize_t sizes[8] = {8, 8, 8, 8, 1, 8, 8, 1};
    if (get_buf(xo, &bufs[nb], 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    nb++;
    if (get_buf(to, &bufs[nb], 0, n * 8, "target") < 0) ok = 0; else nb++;
    int have_w = wo != Py_None;
    if (ok && have_w) { if (get_buf(wo, &bufs[nb], 0, c * 8, "weight") < 0) ok = 0; else nb++; }
    for (int i = 0; ok && i < 8; i++) {
        if (get_buf(outs[i], &bufs[nb], 1, n * sizes[i], "output") < 0) ok = 0; else nb++;
    }
    if (!ok) { for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]); return NULL; }
    int o0 = have_w ? 3 : 2;
    /* check the targets here (with the GIL): in [0, C) or ignore_index */
    const int64_t *tg = (const int64_t *)bufs[1].buf;
    for (Py_ssize_t r = r0; r < r1; r++) {
        if (tg[r] != ign && (tg[r] < 0 || tg[r] >= c)) {
            PyErr_Format(PyExc_ValueError, "target %lld of row %zd is out of range [0, %zd)",
                         (long long)tg[r], r, c);
            for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
            return NULL;
        }
    }
    xe_args A = {bufs[0].buf, c, tg, have_w ? (const double *)bufs[2].buf : NULL, wsum,
                 (int64_t)ign, eps,
                 (double *)bufs[o0 + 0].buf, (double *)bufs[o0 + 1].buf, (double *)bufs[o0 + 2].buf,
                 (double *)bufs[o0 + 5].buf, (double *)bufs[o0 + 6].buf,
                 (int64_t *)bufs[o0 + 3].buf, (uint8_t *)bufs[o0 + 4].buf, (uint8_t *)bufs[o0 + 7].buf};
    int64_t nfb = 0;
    Py_BEGIN_ALLOW_THREADS
    xent_rows_kernel(&A, r0, r1, &nfb, dt);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
    return PyLong_FromLongLong((long long)nfb);
}

/* xent_prob(x, dt, n, c, t, t64, weight|None, eps, r0, r1, loss, nll, logp_true, p_true,
 *           margin, entropy, residual, argmax, true_class, top5, fallback) -> n_fallback */
static PyObject *py_xent_prob(PyObject *self, PyObject *args) {
    PyObject *xo, *to, *wo, *outs[11];
    int dt, t64;
    Py_ssize_t n, c, r0, r1;
    double eps;
    if (!PyArg_ParseTuple(args, "OinnOiOdnnOOOOOOOOOOO", &xo, &dt, &n, &c, &to, &t64, &wo, &eps,
                          &r0, &r1, &outs[0], &outs[1], &outs[2], &outs[3], &outs[4], &outs[5],
                          &outs[6], &outs[7], &outs[8], &outs[9], &outs[10]))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (c < 1) { PyErr_SetString(PyExc_ValueError, "no classes"); return NULL; }
    Py_buffer bufs[14];
    int nb = 0, ok = 1;
    Py_ssize_t sizes[11] = {8, 8, 8, 8, 8, 8, 8, 8, 8, 1, 1};
    if (get_buf(xo, &bufs[nb], 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    nb++;
    if (get_buf(to, &bufs[nb], 0, n * c * (t64 ? 8 : 4), "target") < 0) ok = 0; else nb++;
    int have_w = wo != Py_None;
    if (ok && have_w) { if (get_buf(wo, &bufs[nb], 0, c * 8, "weight") < 0) ok = 0; else nb++; }
    for (int i = 0; ok && i < 11; i++) {
        if (get_buf(outs[i], &bufs[nb], 1, n * sizes[i], "output") < 0) ok = 0; else nb++;
    }
    double *eb = ok ? (double *)malloc(sizeof(double) * (size_t)c) : NULL;
    if (ok && !eb) { ok = 0; PyErr_NoMemory(); }
    if (!ok) { for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]); return NULL; }
    int o0 = have_w ? 3 : 2;
    double *d[7];
    for (int i = 0; i < 7; i++) d[i] = (double *)bufs[o0 + i].buf;
    xp_args A = {bufs[0].buf, c, bufs[1].buf, t64 ? 1 : 0,
                 have_w ? (const double *)bufs[2].buf : NULL, eps,
                 d[0], d[1], d[2], d[3], d[4], d[5], d[6],
                 (int64_t *)bufs[o0 + 7].buf, (int64_t *)bufs[o0 + 8].buf,
                 (uint8_t *)bufs[o0 + 9].buf, (uint8_t *)bufs[o0 + 10].buf, eb};
    int64_t nfb = 0;
    Py_BEGIN_ALLOW_THREADS
    xp_rows_kernel(&A, r0, r1, &nfb, dt);
    Py_END_ALLOW_THREADS
    free(eb);
    for (int i = 0; i < nb; i++) PyBuffer_Release(&bufs[i]);
    return PyLong_FromLongLong((long long)nfb);
}

/* vjp(x, g_f64, out, dt, n, c, kind, t, r0, r1, fallback) -> n_fallback */
static PyObject *py_vjp(PyObject *self, PyObject *args) {
    PyObject *xo, *go, *oo, *fo;
    int dt, kind;
    Py_ssize_t n, c, r0, r1;
    double t;
    if (!PyArg_ParseTuple(args, "OOOinnidnnO", &xo, &go, &oo, &dt, &n, &c, &kind, &t, &r0, &r1,
                          &fo))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    Py_buffer xb, gb, ob, fb;
    if (get_buf(xo, &xb, 0, n * c * ITEMSIZE[dt], "x") < 0) return NULL;
    if (get_buf(go, &gb, 0, n * c * 8, "g") < 0) { PyBuffer_Release(&xb); return NULL; }
    if (get_buf(oo, &ob, 1, n * c * ITEMSIZE[dt], "out") < 0) {
        PyBuffer_Release(&xb); PyBuffer_Release(&gb); return NULL;
    }
    if (get_buf(fo, &fb, 1, n, "fallback") < 0) {
        PyBuffer_Release(&xb); PyBuffer_Release(&gb); PyBuffer_Release(&ob); return NULL;
    }
    double *scratch = c > 0 ? (double *)malloc(sizeof(double) * 2 * (size_t)c) : NULL;
    int64_t nfb = 0;
    if (c > 0 && !scratch) {
        PyBuffer_Release(&xb); PyBuffer_Release(&gb); PyBuffer_Release(&ob); PyBuffer_Release(&fb);
        return PyErr_NoMemory();
    }
    vj_args A = {xb.buf, (const double *)gb.buf, ob.buf, c, t, kind, scratch,
                 scratch ? scratch + c : NULL, (uint8_t *)fb.buf};
    if (c > 0) {
        Py_BEGIN_ALLOW_THREADS
        vjp_rows_kernel(&A, r0, r1, &nfb, dt);
        Py_END_ALLOW_THREADS
    }
    free(scratch);
    PyBuffer_Release(&xb); PyBuffer_Release(&gb); PyBuffer_Release(&ob); PyBuffer_Release(&fb);
    return PyLong_FromLongLong((long long)nfb);
}

/* the instruction set of the clone that runs (the resolver's choice) */
static int best_isa(void) {
#if SMX_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return ISA_AVX512;
    if (__builtin_cpu_supports("x86-64-v3")) return ISA_AVX2;
#endif
    return ISA_BASE;
}

static const char *const ISA_NAMES[3] = {"baseline", "avx2", "avx512"};

static const char *isa_name(void) { return ISA_NAMES[g_isa]; }

static PyObject *py_isa(PyObject *self, PyObject *noargs) { return PyUnicode_FromString(isa_name()); }

/* test hook: exp_hl on one value -> (hi, lo) */
static PyObject *py_exp_hl(PyObject *self, PyObject *args) {
    double x, h, l;
    if (!PyArg_ParseTuple(args, "d", &x)) return NULL;
    exp_hl(x, &h, &l, 0);
    return Py_BuildValue("(dd)", h, l);
}

/* test hook: round16(src float64 buffer, dst uint16 buffer, n, dt) */
static PyObject *py_round16(PyObject *self, PyObject *args) {
    PyObject *so, *dso;
    Py_ssize_t n;
    int dt;
    if (!PyArg_ParseTuple(args, "OOni", &so, &dso, &n, &dt)) return NULL;
    Py_buffer sb, db;
    if (get_buf(so, &sb, 0, n * 8, "src") < 0) return NULL;
    if (get_buf(dso, &db, 1, n * 2, "dst") < 0) { PyBuffer_Release(&sb); return NULL; }
    const double *src = (const double *)sb.buf;
    uint16_t *dst = (uint16_t *)db.buf;
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = dt == DT_F16 ? f64_to_f16(src[i]) : f64_to_bf16(src[i]);
    PyBuffer_Release(&sb); PyBuffer_Release(&db);
    Py_RETURN_NONE;
}

/* test hook: run the variant of the named instruction set (at most the CPU's
 * best); returns the previous name */
static PyObject *py_set_isa(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s", &name)) return NULL;
    int want = -1;
    for (int i = 0; i < 3; i++) if (strcmp(name, ISA_NAMES[i]) == 0) want = i;
    if (want < 0 || want > best_isa()) {
        PyErr_Format(PyExc_ValueError, "instruction set %s is not available", name);
        return NULL;
    }
    const char *old = isa_name();
    g_isa = want;
    return PyUnicode_FromString(old);
}

static PyMethodDef methods[] = {
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, out, dt, n, c, kind, t, masked_zero, r0, r1, argmax)"},
    {"logsumexp", py_logsumexp, METH_VARARGS, "logsumexp(x, out, dt, out_dt, n, c, t, r0, r1)"},
    {"xent", py_xent, METH_VARARGS, "xent(x, dt, n, c, target, weight, wsum, ignore_index, eps, r0, r1, "
                                    "loss, logp_true, p_true, argmax, top5, margin, entropy, fallback)"},
    {"xent_prob", py_xent_prob, METH_VARARGS,
     "xent_prob(x, dt, n, c, t, t64, weight, eps, r0, r1, loss, nll, logp_true, p_true, "
     "margin, entropy, residual, argmax, true_class, top5, fallback)"},
    {"vjp", py_vjp, METH_VARARGS, "vjp(x, g, out, dt, n, c, kind, t, r0, r1, fallback)"},
    {"isa", py_isa, METH_NOARGS, "instruction set of the running clone"},
    {"exp_hl", py_exp_hl, METH_VARARGS, "exp(x) as (hi, lo) (test hook)"},
    {"round16", py_round16, METH_VARARGS, "round16(src_f64, dst_u16, n, dt) (test hook)"},
    {"set_isa", py_set_isa, METH_VARARGS, "run the named instruction set's kernels (test hook); "
                                          "returns the old name"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_smx_native",
                                    "Fused accurate softmax kernels for smx.", -1, methods};

PyMODINIT_FUNC PyInit__smx_native(void) {
    g_isa = best_isa();
    return PyModule_Create(&moddef);
}
