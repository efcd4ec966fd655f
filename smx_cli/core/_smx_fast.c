/* _smx_fast: the compiled fast mode (softmax / log-softmax in the input's own
 * arithmetic) and the compiled one-pass online normaliser, for smx (module
 * smx_cli.core._smx_fast; Python wrapper smx_cli/core/native_fast.py, which
 * states and the tests assert the bounds).
 *
 * Fast mode (fast_rows): float16 / bfloat16 / float32 rows in float32
 * arithmetic, float64 rows in float64, the plain max-shift:
 *   m = max_j x_j;  q_j = fl(x_j - m) [ fl(q_j / T) ];  e_j = exp(q_j);
 *   p_j = e_j * fl(1 / S)   or   logp_j = q_j - fl(log S),   S = sum_j e_j.
 * float16 / bfloat16 rows are widened to float32 into a row buffer (F16C on
 * the AVX2 / AVX-512 variants), computed in it and rounded once to the format
 * (vcvtps2ph, round to nearest even). Error budget (u = unit roundoff of the
 * working format, 2^-24 or 2^-53; k = 1 without temperature; with one, 2 in
 * float64 (the division's rounding) and 3 in float32 arithmetic, where T is
 * rounded to float32 too; stated as 3 for both):
 *   - shift: |fl(q) - q| <= k |q| u, which exp turns into a relative error of
 *     k |q| u (the plain max-shift's defining cost);
 *   - exp: Cody-Waite reduction (ln 2 split so k ln2_hi is exact), Taylor
 *     polynomial (float32: degree 7, truncation < 2^-27.5; float64: exp1 of
 *     _smx_base.h, degree 13), one rounding of 1 + r s: <= 2 u;
 *   - S: float32 terms summed in 16 float64 lanes (relative error below
 *     C 2^-57, nothing at float32 scale for C < 2^27); float64 terms in 16
 *     lanes restarted every 4 terms, the block sums added as double-doubles
 *     (<= 3 u + 2 u);
 *   - float64 exp below -700 (exp1 flushes under -708): exp(q + 64) e^-64,
 *     one more rounding (u);
 *   - fl(1 / S): u; the product p = e * inv: the final rounding (0.5 ulp).
 *   A relative error of r u costs at most r ulps, so probabilities are within
 *   float32: 0.5 + k|q| + 2 + 1 (+ C 2^-33) <= 4 + k|q| ulps;
 *   float64: 0.5 + k|q| + 2 + 1 + 3.5 + 1 <= 8 + k|q| ulps;
 *   16-bit outputs: 0.5 ulp of the format plus the float32 error scaled by
 *   2^-13 (float16) or 2^-16 (bfloat16).
 *   Log-probabilities logp = q - fl(log S): the shift k|q| u, log S off by the
 *   e-weighted mean of the terms' errors, sum_j p_j (k|q_j| + 7) u <=
 *   (k ln C + 7) u (sum_j p_j |q_j| = H(p) - ln S <= ln C), plus the roundings
 *   of log S (u lse) and of the difference (u |logp|): no cancellation (q <= 0,
 *   lse >= 0), so |error| <= (k|q| + k ln C + 10) u max(|logp|, 1)
 *   = (5 + k(|q| + ln C)/2) eps max(|logp|, 1), eps = 2u; stated with k(|q| +
 *   ln C) for margin.
 *
 * Online (online_rows, the `online` variant): one read pass computes, per
 * block of B columns, the block maximum m_b and the compensated block sum
 * T_b = sum_{j in b} exp((x_j - m_b)/T) (16/32-bit: lowp_exp_sum_w, float64:
 * exp_sum's grid-split sum of exp pairs, both from _smx_base.h); the running
 * maximum M = max_b m_b is kept, and the blocks are merged with the online
 * normaliser's operator (Milakov & Gimelshein 2018, eq. 4)
 *   (M, S) = (m_1, T_1) (+) ... (+) (m_K, T_K),  S = sum_b T_b exp((m_b - M)/T),
 * each rescale factor computed once against the final M (float64: as an
 * exp pair with the TwoSum error of m_b - M folded in, the products as
 * double-doubles) so the rescalings' errors do not compound. Then one output
 * pass: p_j = exp((x_j - M)/T) / S, by the accurate core's single-word path
 * (16/32-bit, rounded once) or its corrected division (float64).
 *
 * Build flags, CPU dispatch: as _smx_native.c (-O3 -fno-trapping-math
 * -ffp-contract=off, target attributes x86-64-v4 / x86-64-v3 / baseline picked
 * at import; never -march=native, never -ffast-math). _smx_common.h and
 * _smx_base.h are included read-only (their numerics are shared, not copied).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_smx_dispatch.h"
#if SMX_X86
#include <immintrin.h>
#endif
#if defined(__x86_64__) && defined(__GNUC__)
#include <emmintrin.h>
#define SMX_STREAM 1
#else
#define SMX_STREAM 0
#endif

/* kernel NAME_t(ARGS..., ISA) -> NAME(ARGS...): each variant passes its ISA */
#define FVARIANTS(NAME, PARAMS, ...) \
    SMX_VARIANTS(NAME, PARAMS, ISA_AVX512, ISA_AVX2, ISA_BASE, __VA_ARGS__)

#include "_smx_common.h"
#include "_smx_base.h"
#include "_smx_lowp.h"

#define FL 16   /* lanes of the fast kernels */
#define RB 4    /* float64 fast sums: terms per lane between restarts */
#define CH 512  /* entries per L1 chunk of the output passes */

/* ------------------------------------------------------------------------ */
/* 16-bit rows <-> float32 buffers                                           */

/* float32 -> bfloat16, round to nearest even (exact float32 -> float64 -> bf16
 * would be the same; this is the integer form that vectorises) */
AI uint16_t f32_to_bf16(float f) {
    uint32_t u = asu32(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((f != f) ? ((u >> 16) | 0x40u) : r);
}

/* float32 -> float16, round to nearest even, integer form (vectorises) */
AI uint16_t f32_to_f16(float f) {
    uint32_t u = asu32(f);
    uint32_t sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    uint32_t reb = a - (112u << 23);                       /* rebias 127 -> 15 */
    uint32_t rnd = (reb + 0xfffu + ((reb >> 13) & 1u)) >> 13;
    /* |f| < 2^-14: round to a multiple of 2^-24 by one addition (ulp of 0.5) */
    uint32_t sub = asu32(asf32(a) + 0.5f) - asu32(0.5f);
    uint32_t r = a < 0x38800000u ? sub : rnd;
    r = a >= 0x477ff000u ? 0x7c00u : r;                    /* >= 65520: inf */
    r = a > 0x7f800000u ? 0x7e00u : r;                     /* NaN */
    return (uint16_t)(r | sign);
}

#if SMX_X86
SMX_V4 static void f16_in_v4(const uint16_t *s, float *d, Py_ssize_t n) {
    Py_ssize_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm512_storeu_ps(d + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + j))));
    for (; j < n; j++) d[j] = f16_to_f32(s[j]);
}
SMX_V3 static void f16_in_v3(const uint16_t *s, float *d, Py_ssize_t n) {
    Py_ssize_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(d + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + j))));
    for (; j < n; j++) d[j] = f16_to_f32(s[j]);
}
SMX_V4 static void f16_out_v4(const float *s, uint16_t *d, Py_ssize_t n) {
    Py_ssize_t j = 0;
    for (; j + 16 <= n; j += 16)
        _mm256_storeu_si256((__m256i *)(d + j),
                            _mm512_cvtps_ph(_mm512_loadu_ps(s + j), _MM_FROUND_TO_NEAREST_INT));
    for (; j < n; j++) d[j] = f32_to_f16(s[j]);
}
SMX_V3 static void f16_out_v3(const float *s, uint16_t *d, Py_ssize_t n) {
    Py_ssize_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i *)(d + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + j), _MM_FROUND_TO_NEAREST_INT));
    for (; j < n; j++) d[j] = f32_to_f16(s[j]);
}
#endif

AI void row_in(const void *x, float *d, Py_ssize_t n, const int DT, const int ISA) {
    if (DT == DT_BF16) {
        const uint16_t *s = (const uint16_t *)x;
        for (Py_ssize_t j = 0; j < n; j++) d[j] = bf16_to_f32(s[j]);
        return;
    }
#if SMX_X86
    if (ISA == ISA_AVX512) { f16_in_v4((const uint16_t *)x, d, n); return; }
    if (ISA == ISA_AVX2) { f16_in_v3((const uint16_t *)x, d, n); return; }
#endif
    const uint16_t *s = (const uint16_t *)x;
    for (Py_ssize_t j = 0; j < n; j++) d[j] = f16_to_f32(s[j]);
}

AI void row_out(const float *s, void *o, Py_ssize_t n, const int DT, const int ISA) {
    uint16_t *d = (uint16_t *)o;
    if (DT == DT_BF16) {
        for (Py_ssize_t j = 0; j < n; j++) d[j] = f32_to_bf16(s[j]);
        return;
    }
#if SMX_X86
    if (ISA == ISA_AVX512) { f16_out_v4(s, d, n); return; }
    if (ISA == ISA_AVX2) { f16_out_v3(s, d, n); return; }
#endif
    for (Py_ssize_t j = 0; j < n; j++) d[j] = f32_to_f16(s[j]);
}

/* ------------------------------------------------------------------------ */
/* output stores that skip the cache                                         */

/* copy nbytes to d with non-temporal stores where d is aligned: the output
 * is not read again, so its cache lines need not be fetched first (the
 * read-for-ownership of a plain store is a third of the memory traffic of a
 * wide row). stream_fence() before the kernel returns. */
#if SMX_X86
SMX_V4 static void stream_v4(const char *s, char *d, size_t nb) {
    size_t h = (size_t)(-(uintptr_t)d & 63);
    h = h < nb ? h : nb;
    memcpy(d, s, h);
    size_t j = h;
    for (; j + 64 <= nb; j += 64)
        _mm512_stream_si512((void *)(d + j), _mm512_loadu_si512((const void *)(s + j)));
    memcpy(d + j, s + j, nb - j);
}
SMX_V3 static void stream_v3(const char *s, char *d, size_t nb) {
    size_t h = (size_t)(-(uintptr_t)d & 31);
    h = h < nb ? h : nb;
    memcpy(d, s, h);
    size_t j = h;
    for (; j + 32 <= nb; j += 32)
        _mm256_stream_si256((__m256i *)(d + j), _mm256_loadu_si256((const __m256i *)(s + j)));
    memcpy(d + j, s + j, nb - j);
}
#endif
static void stream_base(const char *s, char *d, size_t nb) {
#if SMX_STREAM
    size_t h = (size_t)(-(uintptr_t)d & 15);
    h = h < nb ? h : nb;
    memcpy(d, s, h);
    size_t j = h;
    for (; j + 16 <= nb; j += 16)
        _mm_stream_si128((__m128i *)(d + j), _mm_loadu_si128((const __m128i *)(s + j)));
    memcpy(d + j, s + j, nb - j);
#else
    memcpy(d, s, nb);
#endif
}

AI void stream_out(const void *s, void *d, size_t nb, const int ISA) {
#if SMX_X86
    if (ISA == ISA_AVX512) { stream_v4((const char *)s, (char *)d, nb); return; }
    if (ISA == ISA_AVX2) { stream_v3((const char *)s, (char *)d, nb); return; }
#endif
    stream_base((const char *)s, (char *)d, nb);
}

static void stream_fence(void) {
#if SMX_STREAM
    _mm_sfence();
#endif
}

/* ------------------------------------------------------------------------ */
/* float32 exp for arguments <= 0                                            */

#define LOG2EF 0x1.715476p0f
#define LN2HIF 0x1.62e4p-1f          /* 16 bits: k * LN2HIF exact for |k| < 2^8 */
#define LN2LOF 0x1.7f7d1cp-20f       /* ln 2 - LN2HIF, rounded */
#define SHIFTF 0x1.8p23f
#define FMAF_(a, b, c, F) ((F) ? fmaf((a), (b), (c)) : (a) * (b) + (c))

/* exp(d) for d <= 0 (d = -inf or d < -104 gives 0): k = rint(d log2e),
 * r = (d - k LN2HI) - k LN2LO (first step exact, |r| <= 0.35), exp(r) by the
 * Taylor polynomial of degree 7 in Horner form (truncation < 2^-27.5), times
 * 2^k in two exact steps (subnormal results rounded once). Relative error
 * <= 2 u (u = 2^-24; budget in the header comment). */
AI float exp_f32(float d, const int F) {
    float dc = d < -104.0f ? -104.0f : d;
    float kf = FMAF_(dc, LOG2EF, SHIFTF, F);
    uint32_t ki = asu32(kf);
    kf -= SHIFTF;
    float r = dc - kf * LN2HIF;
    r = FMAF_(-kf, LN2LOF, r, F);
    float s = FMAF_(r, 1.0f / 5040.0f, 1.0f / 720.0f, F);
    s = FMAF_(s, r, 1.0f / 120.0f, F);
    s = FMAF_(s, r, 1.0f / 24.0f, F);
    s = FMAF_(s, r, 1.0f / 6.0f, F);
    s = FMAF_(s, r, 0.5f, F);
    s = FMAF_(s, r, 1.0f, F);
    float p = FMAF_(s, r, 1.0f, F);
    int32_t k = (int32_t)(ki - asu32(SHIFTF));
    int32_t k1 = k >> 1, k2 = k - k1;
    float s1 = asf32((uint32_t)(k1 + 127) << 23), s2 = asf32((uint32_t)(k2 + 127) << 23);
    float e = (p * s1) * s2;
    return d < -104.0f ? 0.0f : e;
}

/* ------------------------------------------------------------------------ */
/* special rows (NaN, +inf maximum, all -inf): the numpy kernels' results    */

/* NaN anywhere: NaN; +inf entries share the mass (log: log(1/n)), the rest
 * 0 (log -inf); all -inf: NaN, or 0 / -inf with masked_zero. Values computed
 * in float64 and rounded once, as numpy does. */
AI void special_fill(const void *x, void *o, Py_ssize_t C, int kind, int mz, const int DT) {
    int has_nan;
    double m = row_max(x, 0, C, &has_nan, DT);
    if (has_nan) {
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, NAN, DT);
    } else if (m == INFINITY) {
        Py_ssize_t n = 0;
        for (Py_ssize_t j = 0; j < C; j++) n += ld(x, j, DT) == INFINITY;
        double p = 1.0 / (double)n;
        double top = kind ? log(p) : p, rest = kind ? -INFINITY : 0.0;
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, ld(x, j, DT) == INFINITY ? top : rest, DT);
    } else {
        double v = mz ? (kind ? -INFINITY : 0.0) : NAN;
        for (Py_ssize_t j = 0; j < C; j++) st(o, j, v, DT);
    }
}

/* ------------------------------------------------------------------------ */
/* fast mode rows                                                            */

typedef struct {
    const void *x;
    void *out;
    Py_ssize_t C;
    double t;
    int kind;   /* 0 prob, 1 logprob */
    int mz;     /* masked rows give 0 / -inf instead of NaN */
    void *buf;  /* C doubles: the row's exp terms until 1/S is known */
} fast_args;

/* the maximum of a float32 row on integer keys (monotone in the value; an
 * integer max is a reduction gcc vectorises, a float one it may not without
 * -ffinite-math-only). A positive NaN is above +inf (the row is then special);
 * a negative NaN is below -inf and is caught by the NaN row sum. */
AI int32_t key32(int32_t b) { return b ^ (int32_t)((uint32_t)(b >> 31) >> 1); }
AI float max_f32(const float *x, Py_ssize_t C) {
    int32_t km = INT32_MIN;
    for (Py_ssize_t j = 0; j < C; j++) {
        int32_t k = key32((int32_t)asu32(x[j]));
        km = k > km ? k : km;
    }
    return asf32((uint32_t)key32(km));
}

/* one float32 row, x may alias o (16-bit rows run in place in the buffer).
 * Returns 0, or 1 when the row is special (non-finite maximum, or a NaN
 * met on the way): the caller refills it. */
AI int fast_row_f32(const float *x, float *o, float *buf, Py_ssize_t C, float t, const int KIND,
                    const int HAS_T, const int ISA) {
    const int F = ISA != ISA_BASE;
    float m = max_f32(x, C);
    if (!(m - m == 0.0f)) return 1;
    Py_ssize_t j;
    double acc[FL];
    for (int l = 0; l < FL; l++) acc[l] = 0.0;
#define SUM_BODY(J, L)                                                          \
    {                                                                           \
        float d = x[(J)] - m;                                                   \
        if (HAS_T) d = d / t;                                                   \
        float e = exp_f32(d, F);                                                \
        if (!KIND) o[(J)] = e;                                                  \
        acc[L] += (double)e;                                                    \
    }
    for (j = 0; j + FL <= C; j += FL)
        for (int l = 0; l < FL; l++) SUM_BODY(j + l, l)
    for (; j < C; j++) SUM_BODY(j, 0)
#undef SUM_BODY
    for (int w = FL / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    double S = acc[0];
    if (S != S) return 1;  /* a NaN entry */
    float inv = (float)(1.0 / S), lse = (float)log(S);
    if (!KIND) {  /* in place: the row is in cache (measured faster than streaming it) */
        for (j = 0; j < C; j++) o[j] *= inv;
        return 0;
    }
    float tmp[CH];
    for (Py_ssize_t j0 = 0; j0 < C; j0 += CH) {
        Py_ssize_t n = C - j0 < CH ? C - j0 : CH;
        if (!KIND) {
            for (j = 0; j < n; j++) tmp[j] = buf[j0 + j] * inv;
        } else {
            for (j = 0; j < n; j++) {
                float d = x[j0 + j] - m;
                if (HAS_T) d = d / t;
                tmp[j] = d - lse;
            }
        }
        stream_out(tmp, o + j0, (size_t)n * 4, ISA);
    }
    return 0;
}

/* exp(d) for d <= 0 down to the subnormal range: exp1 flushes below -708,
 * so there d + 64 (exact: d in [-1024, -512) is a multiple of 2^-43) is used
 * and the result scaled by fl(e^-64) (one more rounding, + u) */
#define EXP_M64 0x1.969d47321e4ccp-93  /* e^-64 rounded */
AI double exp1_wide(double d, const int F) {
    int low = d < -700.0;
    double e = exp1(low ? d + 64.0 : d, F);
    return low ? e * EXP_M64 : e;
}

AI int fast_row_f64(const double *x, double *o, double *buf, Py_ssize_t C, double t,
                    const int KIND, const int HAS_T, const int ISA) {
    const int F = ISA != ISA_BASE;
    double m = row_max(x, 0, C, NULL, DT_F64);
    if (!(m - m == 0.0)) return 1;
    Py_ssize_t j;
    double th[FL], tl[FL], a[FL];
    for (int l = 0; l < FL; l++) { th[l] = 0.0; tl[l] = 0.0; }
#define SUM_BODY(J, L)                                                          \
    {                                                                           \
        double d = x[(J)] - m;                                                  \
        if (HAS_T) d = d / t;                                                   \
        double e = exp1_wide(d, F);                                             \
        if (!KIND) o[(J)] = e;                                                  \
        a[L] += e;                                                              \
    }
    for (j = 0; j + FL * RB <= C; j += FL * RB) {
        for (int l = 0; l < FL; l++) a[l] = 0.0;
        for (int r = 0; r < RB; r++)
            for (int l = 0; l < FL; l++) SUM_BODY(j + r * FL + l, l)
        for (int l = 0; l < FL; l++) {  /* TwoSum into the lane's double-double */
            double s = th[l] + a[l], bv = s - th[l];
            tl[l] += (th[l] - (s - bv)) + (a[l] - bv);
            th[l] = s;
        }
    }
    dd_t s = {0.0, 0.0};
    for (; j < C; j++) {  /* the tail (< FL * RB terms): each term TwoSummed */
        a[0] = 0.0;
        SUM_BODY(j, 0)
        dd_add(&s, a[0]);
    }
#undef SUM_BODY
    for (int l = 0; l < FL; l++) { dd_add(&s, th[l]); s.lo += tl[l]; }
    double S = s.hi + s.lo;
    if (S != S) return 1;
    double inv = 1.0 / S, lse = log(S);
    if (!KIND) {  /* in place: the row is in cache (measured faster than streaming it) */
        for (j = 0; j < C; j++) o[j] *= inv;
        return 0;
    }
    double tmp[CH];
    for (Py_ssize_t j0 = 0; j0 < C; j0 += CH) {
        Py_ssize_t n = C - j0 < CH ? C - j0 : CH;
        if (!KIND) {
            for (j = 0; j < n; j++) tmp[j] = buf[j0 + j] * inv;
        } else {
            for (j = 0; j < n; j++) {
                double d = x[j0 + j] - m;
                if (HAS_T) d = d / t;
                tmp[j] = d - lse;
            }
        }
        stream_out(tmp, o + j0, (size_t)n * 8, ISA);
    }
    return 0;
}

/* one float16 / bfloat16 row: the maximum on 16-bit keys, then chunks of
 * CH entries widened into an L1 buffer (F16C on the AVX variants) for the
 * float32 loops; probabilities are kept in the row buffer buf (C floats)
 * until 1/S is known, then scaled and rounded once to the format. */
AI int16_t key16(int16_t b) { return (int16_t)(b ^ (int16_t)((uint16_t)(b >> 15) >> 1)); }
AI int fast_row_16(const uint16_t *x, uint16_t *o, float *buf, Py_ssize_t C, float t,
                   const int DT, const int KIND, const int HAS_T, const int ISA) {
    const int F = ISA != ISA_BASE;
    int16_t km = INT16_MIN;
    for (Py_ssize_t j = 0; j < C; j++) {
        int16_t k = key16((int16_t)x[j]);
        km = k > km ? k : km;
    }
    uint16_t mb = (uint16_t)key16(km);
    float m = DT == DT_F16 ? f16_to_f32(mb) : bf16_to_f32(mb);
    if (!(m - m == 0.0f)) return 1;
    float tmp[CH];
    double acc[FL];
    for (int l = 0; l < FL; l++) acc[l] = 0.0;
    for (Py_ssize_t j0 = 0; j0 < C; j0 += CH) {
        Py_ssize_t n = C - j0 < CH ? C - j0 : CH;
        row_in(x + j0, tmp, n, DT, ISA);
        float *e_out = buf + j0;
        Py_ssize_t j = 0;
#define SUM_BODY(J, L)                                                          \
        {                                                                       \
            float d = tmp[(J)] - m;                                             \
            if (HAS_T) d = d / t;                                               \
            float e = exp_f32(d, F);                                            \
            if (!KIND) e_out[(J)] = e;                                          \
            acc[L] += (double)e;                                                \
        }
        for (; j + FL <= n; j += FL)
            for (int l = 0; l < FL; l++) SUM_BODY(j + l, l)
        for (; j < n; j++) SUM_BODY(j, 0)
#undef SUM_BODY
    }
    for (int w = FL / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    double S = acc[0];
    if (S != S) return 1;  /* a NaN entry */
    float inv = (float)(1.0 / S), lse = (float)log(S);
    uint16_t t16[CH];
    for (Py_ssize_t j0 = 0; j0 < C; j0 += CH) {
        Py_ssize_t n = C - j0 < CH ? C - j0 : CH;
        if (!KIND) {
            for (Py_ssize_t j = 0; j < n; j++) tmp[j] = buf[j0 + j] * inv;
        } else {
            row_in(x + j0, tmp, n, DT, ISA);
            for (Py_ssize_t j = 0; j < n; j++) {
                float d = tmp[j] - m;
                if (HAS_T) d = d / t;
                tmp[j] = d - lse;
            }
        }
        row_out(tmp, t16, n, DT, ISA);
        stream_out(t16, o + j0, (size_t)n * 2, ISA);
    }
    return 0;
}

AI void fast_rows_t(const fast_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT,
                    const int KIND, const int HAS_T, const int ISA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        char *o = (char *)A->out + (size_t)r * C * isz;
        int sp;
        if (DT == DT_F64) {
            sp = fast_row_f64((const double *)x, (double *)o, (double *)A->buf, C, A->t, KIND,
                              HAS_T, ISA);
        } else if (DT == DT_F32) {
            sp = fast_row_f32((const float *)x, (float *)o, (float *)A->buf, C, (float)A->t, KIND,
                              HAS_T, ISA);
        } else {
            sp = fast_row_16((const uint16_t *)x, (uint16_t *)o, (float *)A->buf, C, (float)A->t, DT, KIND,
                             HAS_T, ISA);
        }
        if (sp) special_fill(x, o, C, KIND, A->mz, DT);
    }
    stream_fence();
}

AI void fast_rows_k(const fast_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT, const int ISA) {
    int ht = A->t != 1.0;
    if (A->kind) {
        if (ht) fast_rows_t(A, r0, r1, DT, 1, 1, ISA); else fast_rows_t(A, r0, r1, DT, 1, 0, ISA);
    } else {
        if (ht) fast_rows_t(A, r0, r1, DT, 0, 1, ISA); else fast_rows_t(A, r0, r1, DT, 0, 0, ISA);
    }
}

AI void fast_kernel_t(const fast_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt, const int ISA) {
    switch (dt) {
    case DT_F16: fast_rows_k(A, r0, r1, DT_F16, ISA); break;
    case DT_BF16: fast_rows_k(A, r0, r1, DT_BF16, ISA); break;
    case DT_F32: fast_rows_k(A, r0, r1, DT_F32, ISA); break;
    default: fast_rows_k(A, r0, r1, DT_F64, ISA); break;
    }
}
FVARIANTS(fast_kernel, (const fast_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt), A, r0, r1, dt)

/* ------------------------------------------------------------------------ */
/* online normaliser rows                                                    */

typedef struct {
    const void *x;
    void *out;
    Py_ssize_t C, B;  /* columns, block width */
    double t;
    int mz;
    double *bm, *bh, *bl;  /* per block: maximum, sum hi, sum lo (ceil(C/B) each) */
} online_args;

/* pass 1: block maxima and block sums; returns the row maximum M, *has_nan */
AI double online_blocks(const online_args *A, const void *x, Py_ssize_t nb, int *has_nan,
                        const int DT, const int HAS_T, const int F) {
    Py_ssize_t C = A->C, B = A->B;
    double M = -INFINITY;
    int nanf = 0;
    for (Py_ssize_t b = 0; b < nb; b++) {
        Py_ssize_t j0 = b * B, j1 = j0 + B < C ? j0 + B : C;
        int hn;
        double mb = row_max(x, j0, j1, &hn, DT);
        nanf |= hn;
        A->bm[b] = mb;
        A->bh[b] = 0.0; A->bl[b] = 0.0;
        if (hn || !(mb - mb == 0.0)) continue;   /* NaN, all -inf or +inf: no sum */
        if (DT == DT_F64) {
            sums_t s = {0.0, 0.0, 0.0};
            exp_sum(x, j0, j1, mb, A->t, grid_sigma(1.0, j1 - j0), 0, NULL, NULL, &s, DT, HAS_T,
                    F, 0, 0);
            double hi = s.hi + s.lo;    /* Fast2Sum: s.hi >= 1 > |s.lo| */
            A->bh[b] = hi;
            A->bl[b] = s.lo - (hi - s.hi);
        } else {
            int64_t ninf;
            const char *xb = (const char *)x + (size_t)j0 * ITEMSIZE[DT];
            A->bh[b] = lowp_exp_sum_w(xb, j1 - j0, mb, A->t, NULL, NULL, &ninf, DT, HAS_T, F, 0, 0);
        }
        M = mb > M ? mb : M;
    }
    *has_nan = nanf;
    return M;
}

AI void online_rows_t(const online_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT,
                      const int HAS_T, const int ISA) {
    const int F = ISA != ISA_BASE;
    Py_ssize_t C = A->C, B = A->B;
    Py_ssize_t nb = (C + B - 1) / B;
    size_t isz = (size_t)ITEMSIZE[DT];
    double t = A->t;
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        char *o = (char *)A->out + (size_t)r * C * isz;
        int has_nan;
        double M = online_blocks(A, x, nb, &has_nan, DT, HAS_T, F);
        /* +inf blocks are not counted in M above: recheck the maxima */
        int posinf = 0;
        for (Py_ssize_t b = 0; b < nb; b++) posinf |= A->bm[b] == INFINITY;
        if (has_nan || posinf || M == -INFINITY) { special_fill(x, o, C, 0, A->mz, DT); continue; }
        /* merge: S = sum_b T_b exp((m_b - M)/T), a double-double */
        dd_t S = {0.0, 0.0};
        for (Py_ssize_t b = 0; b < nb; b++) {
            if (!(A->bh[b] > 0.0)) continue;
            if (DT == DT_F64) {
                double q, c, fh, fl;
                shifted(A->bm[b], M, t, &q, &c, HAS_T, F);
                exp_hl(q, &fh, &fl, F);
                fl += fh * c;
                double p = A->bh[b] * fh;
                double pe = prod_err(A->bh[b], fh, p, F) + (A->bh[b] * fl + A->bl[b] * fh);
                dd_add(&S, p);
                S.lo += pe;
            } else {
                double q = A->bm[b] - M;
                if (HAS_T) q = q / t;
                dd_add(&S, A->bh[b] * exp1(q, F));
            }
        }
        double shi = S.hi + S.lo;
        double slo = S.lo - (shi - S.hi);   /* Fast2Sum: S.hi >= 1 */
        double inv = 1.0 / shi;
        if (DT == DT_F64) {
            /* out = q + (r + p_lo - q S_lo) / S_hi, q = p_hi / S_hi (as the accurate core) */
            for (Py_ssize_t j = 0; j < C; j++) {
                double q, c, eh, el;
                shifted(ld(x, j, DT), M, t, &q, &c, HAS_T, F);
                exp_hl(q, &eh, &el, F);
                el += eh * c;
                double qq = eh * inv;
                double p = qq * shi;
                double rr = (eh - p) - prod_err(qq, shi, p, F);
                ((double *)o)[j] = qq + ((rr + el) - qq * slo) * inv;
            }
        } else {
            double s1 = shi + slo;
            double inv1 = 1.0 / s1;
            for (Py_ssize_t j = 0; j < C; j++) {
                double q = ld(x, j, DT) - M;
                if (HAS_T) q = q / t;
                st(o, j, exp1(q, F) * inv1, DT);
            }
        }
    }
}

AI void online_rows_dt(const online_args *A, Py_ssize_t r0, Py_ssize_t r1, const int DT,
                       const int ISA) {
    if (A->t != 1.0) online_rows_t(A, r0, r1, DT, 1, ISA);
    else online_rows_t(A, r0, r1, DT, 0, ISA);
}

AI void online_kernel_t(const online_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt, const int ISA) {
    switch (dt) {
    case DT_F16: online_rows_dt(A, r0, r1, DT_F16, ISA); break;
    case DT_BF16: online_rows_dt(A, r0, r1, DT_BF16, ISA); break;
    case DT_F32: online_rows_dt(A, r0, r1, DT_F32, ISA); break;
    default: online_rows_dt(A, r0, r1, DT_F64, ISA); break;
    }
}
FVARIANTS(online_kernel, (const online_args *A, Py_ssize_t r0, Py_ssize_t r1, int dt), A, r0, r1, dt)

/* ------------------------------------------------------------------------ */
/* Python glue                                                               */

/* fast(x, out, dt, n, c, kind, t, masked_zero, r0, r1) */
static PyObject *py_fast(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int dt, kind, mz;
    Py_ssize_t n, c, r0, r1;
    double t;
    if (!PyArg_ParseTuple(args, "OOinnidinn", &xo, &oo, &dt, &n, &c, &kind, &t, &mz, &r0, &r1))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (!(t > 0.0) || !isfinite(t)) { PyErr_SetString(PyExc_ValueError, "bad temperature"); return NULL; }
    Py_ssize_t need = n * c * ITEMSIZE[dt];
    Py_buffer xb, ob;
    if (get_buf(xo, &xb, 0, need, "x") < 0) return NULL;
    if (get_buf(oo, &ob, 1, need, "out") < 0) { PyBuffer_Release(&xb); return NULL; }
    double *buf = NULL;
    if (c > 0) {
        buf = (double *)malloc(sizeof(double) * (size_t)c);
        if (!buf) { PyBuffer_Release(&xb); PyBuffer_Release(&ob); return PyErr_NoMemory(); }
    }
    fast_args A = {xb.buf, ob.buf, c, t, kind ? 1 : 0, mz, buf};
    if (c > 0) {
        Py_BEGIN_ALLOW_THREADS
        fast_kernel(&A, r0, r1, dt);
        Py_END_ALLOW_THREADS
    }
    free(buf);
    PyBuffer_Release(&xb); PyBuffer_Release(&ob);
    Py_RETURN_NONE;
}

/* online(x, out, dt, n, c, block, t, masked_zero, r0, r1) */
static PyObject *py_online(PyObject *self, PyObject *args) {
    PyObject *xo, *oo;
    int dt, mz;
    Py_ssize_t n, c, blk, r0, r1;
    double t;
    if (!PyArg_ParseTuple(args, "OOinnndinn", &xo, &oo, &dt, &n, &c, &blk, &t, &mz, &r0, &r1))
        return NULL;
    if (check_rows(dt, n, c, r0, r1) < 0) return NULL;
    if (blk < 1) { PyErr_SetString(PyExc_ValueError, "block width must be >= 1"); return NULL; }
    if (!(t > 0.0) || !isfinite(t)) { PyErr_SetString(PyExc_ValueError, "bad temperature"); return NULL; }
    Py_ssize_t need = n * c * ITEMSIZE[dt];
    Py_buffer xb, ob;
    if (get_buf(xo, &xb, 0, need, "x") < 0) return NULL;
    if (get_buf(oo, &ob, 1, need, "out") < 0) { PyBuffer_Release(&xb); return NULL; }
    Py_ssize_t nb = c > 0 ? (c + blk - 1) / blk : 0;
    double *sc = NULL;
    if (nb > 0) {
        sc = (double *)malloc(sizeof(double) * 3 * (size_t)nb);
        if (!sc) { PyBuffer_Release(&xb); PyBuffer_Release(&ob); return PyErr_NoMemory(); }
    }
    online_args A = {xb.buf, ob.buf, c, blk, t, mz, sc, sc ? sc + nb : NULL, sc ? sc + 2 * nb : NULL};
    if (c > 0) {
        Py_BEGIN_ALLOW_THREADS
        online_kernel(&A, r0, r1, dt);
        Py_END_ALLOW_THREADS
    }
    free(sc);
    PyBuffer_Release(&xb); PyBuffer_Release(&ob);
    Py_RETURN_NONE;
}

/* test hook: exp_f32 on a float32 buffer, in place, with the named variant's
 * FMA setting (fma=1: fused, 0: separate multiply and add) */
static PyObject *py_exp_f32(PyObject *self, PyObject *args) {
    PyObject *bo;
    Py_ssize_t n;
    int fma_;
    if (!PyArg_ParseTuple(args, "Oni", &bo, &n, &fma_)) return NULL;
    Py_buffer b;
    if (get_buf(bo, &b, 1, n * 4, "buf") < 0) return NULL;
    float *p = (float *)b.buf;
    for (Py_ssize_t j = 0; j < n; j++) p[j] = fma_ ? exp_f32(p[j], 1) : exp_f32(p[j], 0);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

/* test hook: f32_to_f16 / f32_to_bf16 (dt 0 / 1) of a float32 buffer into a uint16 one */
static PyObject *py_round16(PyObject *self, PyObject *args) {
    PyObject *so, *dso;
    Py_ssize_t n;
    int dt;
    if (!PyArg_ParseTuple(args, "OOni", &so, &dso, &n, &dt)) return NULL;
    Py_buffer sb, db;
    if (get_buf(so, &sb, 0, n * 4, "src") < 0) return NULL;
    if (get_buf(dso, &db, 1, n * 2, "dst") < 0) { PyBuffer_Release(&sb); return NULL; }
    const float *src = (const float *)sb.buf;
    uint16_t *dst = (uint16_t *)db.buf;
    for (Py_ssize_t i = 0; i < n; i++) dst[i] = dt == DT_F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
    PyBuffer_Release(&sb); PyBuffer_Release(&db);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"fast", py_fast, METH_VARARGS, "fast(x, out, dt, n, c, kind, t, masked_zero, r0, r1)"},
    {"online", py_online, METH_VARARGS, "online(x, out, dt, n, c, block, t, masked_zero, r0, r1)"},
    {"isa", py_isa, METH_NOARGS, "instruction set of the running variant"},
    {"exp_f32", py_exp_f32, METH_VARARGS, "exp_f32(buf_f32, n, fma) in place (test hook)"},
    {"round16", py_round16, METH_VARARGS, "round16(src_f32, dst_u16, n, dt) (test hook)"},
    {"set_isa", py_set_isa, METH_VARARGS, "run the named instruction set's kernels (test hook); "
                                          "returns the old name"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "_smx_fast",
                                    "Compiled fast mode and online normaliser for smx.", -1, methods};

PyMODINIT_FUNC PyInit__smx_fast(void) {
    g_isa = best_isa();
    return PyModule_Create(&moddef);
}
