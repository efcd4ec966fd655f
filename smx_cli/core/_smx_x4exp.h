/* _smx_x4exp.h: exp of 8 float64 lanes with AVX-512 intrinsics, for the
 * x86-64-v4 variants only (callers check g_isa == ISA_AVX512), shared by the
 * cross-entropy (_smx_xent.h: x4_exp) and the 16/32-bit softmax
 * (_smx_lowp.h: the polynomial of degree 5). Not a public header.
 *
 * exp(d) = 2^floor(k/16) T[k mod 16] (1 + p(r)): k = rint(16 d / ln 2) as
 * kd = k/16 = fl(d / ln2 + 1.5 2^48) - 1.5 2^48 (the low 4 bits of the sum
 * are k mod 16), r = (d - (k/16) CHI) - (k/16) CLO with CHI = ln2 to 39 bits
 * ((k/16) CHI exact for |k| < 2^14, i.e. |d| <= 708, and d - (k/16) CHI
 * exact by Sterbenz) and CLO the rest, so |r| <= ln2/32 = 0.02166
 * and r's error is <= u |r| + 2^-90 < 0.022 u (u = 2^-53); T[j] = 2^(j/16)
 * rounded (0.5 u) from a 16-entry table held in two registers (vpermt2pd on
 * k's low 4 bits); T + T p in one FMA (0.5 u); the scaling by 2^floor(k/16)
 * (vscalefpd on kd) is exact for d >= -708 (exp(-708) is a normal number).
 * p(r) = r + r^2 Q(r) ~ exp(r) - 1, |p| <= 0.022, so p's own roundings cost
 * <= 0.03 u relative to 1 + p. Q is
 *  - DEG 7 (the cross-entropy's): the Taylor polynomial to r^7/7!
 *    (truncation r^8/8! < 2^-59.5 = 0.012 u): <= 1.07 u per term in all;
 *  - DEG 5 (the 16/32-bit softmax's): minimax in the relative error of
 *    exp(r) on |r| <= ln2/32 + 2^-20, coefficients X4E5_C2..C5 fitted and
 *    checked by `python3 bench/fit_exp1.py --table 16 --deg 3` (60-digit
 *    Remez; the float64 coefficients' approximation error is 2^-47.02, and
 *    tests/test_native_lowp.py re-checks these very numbers): <= 2^-47.02
 *    + 1.07 u < 2^-46.99 per term. Two FMAs fewer than DEG 7.
 */
#ifndef SMX_X4EXP_H
#define SMX_X4EXP_H

#if SMX_X86
#include <immintrin.h>

#define AI4 SMX_V4 static inline __attribute__((always_inline))

/* 2^(j/16) = X4_EXP16_HI[j] + X4_EXP16_LO[j]: HI rounded (the table of x4_exp_deg),
 * LO the remainder rounded (2^(j/16) to 2^-107; the float64 pair exps of
 * _smx_f64x4.h and _smx_diag.c take both). Re-derived from mpmath in
 * tests/test_native_lowp.py and tests/test_native_f64_x4.py. */
static const double X4_EXP16_HI[16] = {0x1.0000000000000p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0,
    0x1.2387a6e756238p+0, 0x1.306fe0a31b715p+0, 0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0,
    0x1.5ab07dd485429p+0,
    0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0, 0x1.8ace5422aa0dbp+0,
    0x1.9c49182a3f090p+0, 0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0, 0x1.d5818dcfba487p+0,
    0x1.ea4afa2a490dap+0};
static const double X4_EXP16_LO[16] = {0.0, 0x1.8a62e4adc610bp-54, -0x1.19041b9d78a76p-55, 0x1.9b07eb6c70573p-54,
    0x1.6f46ad23182e4p-55, 0x1.ada0911f09ebcp-55, 0x1.d4397afec42e2p-56, 0x1.6324c054647adp-54,
    -0x1.bdd3413b26456p-54, -0x1.41577ee04992fp-55, 0x1.6e9f156864b27p-54,
    0x1.c7c46b071f2bep-56, 0x1.7a1cd345dcc81p-54, 0x1.11065895048ddp-55,
    0x1.2ed02d75b3707p-55, -0x1.e9c23179c2893p-54};
#define X4E5_C2 0x1.fffffffd5f846p-2
#define X4E5_C3 0x1.5555555495322p-3
#define X4E5_C4 0x1.5557622ae069ap-5
#define X4E5_C5 0x1.11123cf8a38ecp-7

/* exp(d) on the lanes of ok (which must hold only -708 <= d <= 0), 0 on the
 * others (see above; DEG 7 or 5) */
AI4 __m512d x4_exp_deg(__m512d d, __mmask8 ok, const int DEG) {
    const __m512d T0 = _mm512_loadu_pd(X4_EXP16_HI), T1 = _mm512_loadu_pd(X4_EXP16_HI + 8);
    const __m512d sh = _mm512_set1_pd(0x1.8p48);  /* its ulp is 1/16 */
    __m512d kd = _mm512_fmadd_pd(d, _mm512_set1_pd(0x1.71547652b82fep+0), sh);
    __m512i ki = _mm512_castpd_si512(kd);       /* low 4 bits: k mod 16 */
    kd = _mm512_sub_pd(kd, sh);                 /* k/16, exact */
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.62e42fefa4000p-1), d);  /* exact */
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(-0x1.8432a1b0e2634p-43), r);
    __m512d r2 = _mm512_mul_pd(r, r);
    __m512d q;
    if (DEG == 7) {
        q = _mm512_fmadd_pd(_mm512_set1_pd(1.0 / 5040.0), r, _mm512_set1_pd(1.0 / 720.0));
        q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
        q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
        q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
        q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    } else {
        /* Estrin: (C2 + C3 r) + r^2 (C4 + C5 r) */
        __m512d c23 = _mm512_fmadd_pd(_mm512_set1_pd(X4E5_C3), r, _mm512_set1_pd(X4E5_C2));
        __m512d c45 = _mm512_fmadd_pd(_mm512_set1_pd(X4E5_C5), r, _mm512_set1_pd(X4E5_C4));
        q = _mm512_fmadd_pd(c45, r2, c23);
    }
    __m512d p = _mm512_fmadd_pd(r2, q, r);
    __m512d t = _mm512_permutex2var_pd(T0, ki, T1);
    __m512d e = _mm512_maskz_fmadd_pd(ok, t, p, t);
    return _mm512_scalef_pd(e, kd);
}

/* exp(d) for -708 <= d < 0, else 0 (the cross-entropy's: the maxima, d = 0,
 * are left out of its sum) */
AI4 __m512d x4_exp(__m512d d) {
    __mmask8 ok = _mm512_cmp_pd_mask(d, _mm512_setzero_pd(), _CMP_LT_OQ);
    ok = _mm512_mask_cmp_pd_mask(ok, d, _mm512_set1_pd(-708.0), _CMP_GE_OQ);
    return x4_exp_deg(d, ok, 7);
}

/* (*hi, *lo) += s per lane: TwoSum, the error added to *lo */
AI4 void x4_two_sum(__m512d *hi, __m512d *lo, __m512d s) {
    __m512d t = _mm512_add_pd(*hi, s), bv = _mm512_sub_pd(t, *hi);
    __m512d err = _mm512_add_pd(_mm512_sub_pd(*hi, _mm512_sub_pd(t, bv)), _mm512_sub_pd(s, bv));
    *hi = t;
    *lo = _mm512_add_pd(*lo, err);
}

#endif
#endif
