/* _smx_f64x4.h: float64 softmax / log-softmax rows with AVX-512 intrinsics
 * (the x86-64-v4 variant only: callers check g_isa == ISA_AVX512, as for
 * lowp_x4_row). The arithmetic of the portable per-row path
 * (softmax_row_prob / softmax_row_log, exp_sum and rest_lse in _smx_base.h,
 * which stays the reference and the baseline / AVX2 path) with a shorter exp
 * (below), on 8 lanes with masked tails:
 *  - softmax: the maximum (row_max, before the call), one pass for exp as a
 *    pair, its grid-split sum and the pairs stored (hi words into the output
 *    row, lo words to scratch), one pass for the corrected divisions in place;
 *  - log-softmax: one pass for the maximum, its first index and the second
 *    maximum (f64x4_top2, where the per-row path takes row_max, first_index
 *    and two more row_max), one pass for the rest's sum, log1p_dd, one pass
 *    for the outputs.
 * Measured (1 thread, 1024 x 32000, loaded machine): 53 ms softmax and 66 ms
 * log-softmax where the gcc-vectorised per-row path on the same variant took
 * 118 and 117 ms (torch out=: 53 and 63 ms).
 * Included once, by _smx_softmax.h; not a public header.
 *
 * exp as hi + lo (f64x4_exp_hl): exp(d) 2^K = 2^floor(k/16) (Th + Tl)(1 + p)
 * with k = rint(16 d / ln 2) (kd = k/16 from the 1.5 2^48 shift, the low 4
 * bits of its word are k mod 16, as x4_exp_deg in _smx_x4exp.h);
 *  - r = (d - kd LN2H) - kd LN2L, LN2H = ln 2 rounded, LN2L the next 53 bits:
 *    the first FMA is exact (k = 0 unless |d| > ln2/32 > 2^-6, where d is a
 *    multiple of 2^-58, and kd LN2H is one of 2^-57: their difference, below
 *    2^-5 in magnitude, fits 53 bits), the second
 *    rounds once: |r| <= ln2/32 + 2^-40 < 0.0217, error <= 2^-59 (0.016 u,
 *    u = 2^-53), LN2H + LN2L = ln 2 within 2^-110 (times |kd| <= 1443);
 *  - p = r + w, w = r^2 Q(r), Q the Taylor polynomial 1/2! .. 1/7! (Horner,
 *    the coefficients are 1/n! rounded): truncation r^8/8! < 2^-59.5
 *    (0.012 u); w < 2^-11.9 with a few u of its own error (< 2^-63);
 *  - T = 2^(j/16) as Th + Tl (X4_EXP16_HI/LO in _smx_x4exp.h: Th rounded, Tl
 *    the rest rounded, T to 2^-107);
 *  - P = Th r + (Th w + Tl (1 + p)) by three FMAs, one rounding that counts:
 *    |P| < 0.045, <= 2^-58 (0.031 u); hi = Th + P, lo = (Th - hi) + P is
 *    Fast2Sum (|Th| >= 1 > |P|): exact. Then lo += hi c (c: the rounding
 *    error of q = fl(x - m) [/t], exp(q + c) = exp(q)(1 + c) within c^2 <
 *    2^-87) and both words are scaled by 2^(floor(kd) + K) (vscalefpd: exact
 *    for normal results, subnormal ones rounded once, as exp_hl_scaled).
 *  Relative error of hi + lo: 0.016 + 0.012 + 0.031 + < 0.01 u < 0.07 u,
 *  against ~0.15 u for exp_hl_scaled's degree-13 Taylor: the 1.5 ulp budget
 *  of the per-row path (softmax_row_prob) holds with room. d below -1000
 *  gives 0 (both words), as exp_hl_scaled; d never exceeds 0 here.
 *
 * The rest is the per-row path's: the row sum split on the grid 1.5 2^g (the
 * grid parts exact in any order, so 8 lanes change nothing), the corrected
 * division out = q + ((h - q S_hi) + p_lo - q S_lo) / S_hi with the last
 * division a product by 1/S_hi (the correction is < 2 ulp of q, so the
 * relative error u of 1/S_hi costs < 2^-51 ulp of out) and h - q S_hi by one
 * FMA (its rounding, if any, is u of the correction: nothing), rounded once
 * by the final FMA; log-softmax (q - L_hi) + (c - L_lo) with L from log1p_dd.
 * Tails are masked loads (inactive lanes read -inf: exp 0, c 0, stores
 * masked). Underflow counts: softmax counts stored zeros and subtracts the
 * -inf entries (counted in the exp pass), log-softmax counts v < LOG_UNDER on
 * lanes whose x > -inf: the portable path's counts.
 */
#ifndef SMX_F64X4_H
#define SMX_F64X4_H

#if SMX_X86

#define F64X4_LN2H 0x1.62e42fefa39efp-1
#define F64X4_LN2L 0x1.abc9e3b39803fp-56

/* exp(d) 2^K as *hi + *lo (budget above), d <= 0 or -inf (-inf and d < -1000
 * give 0); c folded into lo. kK = K as a double (0 <= K <= 1000). */
AI4 void f64x4_exp_hl(__m512d d, __m512d c, __m512d kK, __m512d *hi, __m512d *lo) {
    const __m512d TH0 = _mm512_loadu_pd(X4_EXP16_HI), TH1 = _mm512_loadu_pd(X4_EXP16_HI + 8);
    const __m512d TL0 = _mm512_loadu_pd(X4_EXP16_LO), TL1 = _mm512_loadu_pd(X4_EXP16_LO + 8);
    const __m512d sh = _mm512_set1_pd(0x1.8p48);  /* its ulp is 1/16 */
    __mmask8 ok = _mm512_cmp_pd_mask(d, _mm512_set1_pd(-1000.0), _CMP_GE_OQ);
    d = _mm512_max_pd(d, _mm512_set1_pd(-1000.0));
    __m512d kd = _mm512_fmadd_pd(d, _mm512_set1_pd(LOG2E), sh);
    __m512i ki = _mm512_castpd_si512(kd);        /* low 4 bits: k mod 16 */
    kd = _mm512_sub_pd(kd, sh);                  /* k/16, exact */
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(F64X4_LN2H), d);  /* exact */
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(F64X4_LN2L), r);
    __m512d q = _mm512_fmadd_pd(_mm512_set1_pd(1.0 / 5040.0), r, _mm512_set1_pd(1.0 / 720.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 120.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 24.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(1.0 / 6.0));
    q = _mm512_fmadd_pd(q, r, _mm512_set1_pd(0.5));
    __m512d w = _mm512_mul_pd(_mm512_mul_pd(r, r), q);
    __m512d p = _mm512_add_pd(r, w);
    __m512d th = _mm512_permutex2var_pd(TH0, ki, TH1);
    __m512d tl = _mm512_permutex2var_pd(TL0, ki, TL1);
    __m512d P = _mm512_fmadd_pd(th, w, _mm512_fmadd_pd(tl, p, tl));
    P = _mm512_fmadd_pd(th, r, P);
    __m512d h = _mm512_add_pd(th, P);
    __m512d l = _mm512_add_pd(_mm512_sub_pd(th, h), P);  /* Fast2Sum */
    l = _mm512_fmadd_pd(h, c, l);
    __m512d sc = _mm512_add_pd(kd, kK);
    *hi = _mm512_maskz_scalef_pd(ok, h, sc);
    *lo = _mm512_maskz_scalef_pd(ok, l, sc);
}

/* q = fl(x - m) [/ t] and its rounding error c (0 where not finite), as shifted() */
AI4 void f64x4_shift(__m512d xv, __m512d mv, __m512d tv, __m512d tinv, __m512d *q, __m512d *c,
                     const int HAS_T) {
    __m512d d = _mm512_sub_pd(xv, mv);
    __m512d bv = _mm512_sub_pd(d, xv);
    __m512d e = _mm512_add_pd(_mm512_sub_pd(xv, _mm512_sub_pd(d, bv)),
                              _mm512_sub_pd(_mm512_sub_pd(_mm512_setzero_pd(), mv), bv));
    if (HAS_T) {
        __m512d qq = _mm512_div_pd(d, tv);
        __m512d rem = _mm512_fnmadd_pd(qq, tv, d);  /* d - qq t, exact */
        e = _mm512_mul_pd(_mm512_add_pd(rem, e), tinv);
        d = qq;
    }
    *q = d;
    __mmask8 fin = _mm512_cmp_pd_mask(_mm512_sub_pd(e, e), _mm512_setzero_pd(), _CMP_EQ_OQ);
    *c = _mm512_maskz_mov_pd(fin, e);
}

AI4 __m512d f64x4_ld(const double *x, Py_ssize_t j, __mmask8 act, const int FULL) {
    return FULL ? _mm512_loadu_pd(x + j)
                : _mm512_mask_loadu_pd(_mm512_set1_pd(-INFINITY), act, x + j);
}

/* sum of exp(z_j) 2^K over [j0, j1) on the grid sigma into *ah, *al (8
 * lanes); STORE: the pairs to ph, pl and the count of -inf entries to *ninf */
AI4 void f64x4_exp_sum(const double *x, Py_ssize_t j0, Py_ssize_t j1, double m, double t,
                       double sigma, int64_t K, double *ph, double *pl, __m512d *ah, __m512d *al,
                       int64_t *ninf, const int HAS_T, const int STORE) {
    const __m512d mv = _mm512_set1_pd(m), tv = _mm512_set1_pd(t), ti = _mm512_set1_pd(1.0 / t);
    const __m512d sg = _mm512_set1_pd(sigma), kK = _mm512_set1_pd((double)K);
    const __m512d ninfv = _mm512_set1_pd(-INFINITY);
    __m512d a0 = *ah, b0 = *al;
    __m512i ni = _mm512_setzero_si512();  /* per-lane counts (negated) of -inf entries */
    const __m512i one = _mm512_set1_epi64(-1);
#define F64X4_E(J, ACT, FULL)                                                   \
    {                                                                           \
        __m512d xv = f64x4_ld(x, (J), (ACT), (FULL)), q, c, eh, el;             \
        f64x4_shift(xv, mv, tv, ti, &q, &c, HAS_T);                             \
        f64x4_exp_hl(q, c, kK, &eh, &el);                                       \
        if (STORE) {                                                            \
            if (FULL) { _mm512_storeu_pd(ph + (J), eh); _mm512_storeu_pd(pl + (J), el); } \
            else { _mm512_mask_storeu_pd(ph + (J), (ACT), eh);                  \
                   _mm512_mask_storeu_pd(pl + (J), (ACT), el); }                \
            ni = _mm512_mask_add_epi64(ni, _mm512_mask_cmp_pd_mask((ACT), xv, ninfv, _CMP_EQ_OQ), \
                                       ni, one);                                \
        }                                                                       \
        __m512d g = _mm512_sub_pd(_mm512_add_pd(eh, sg), sg);                   \
        a0 = _mm512_add_pd(a0, g);                                              \
        b0 = _mm512_add_pd(b0, _mm512_add_pd(_mm512_sub_pd(eh, g), el));       \
    }
    Py_ssize_t j = j0;
    for (; j + 8 <= j1; j += 8) F64X4_E(j, 0xff, 1)
    if (j < j1) {
        __mmask8 act = (__mmask8)((1u << (j1 - j)) - 1u);
        F64X4_E(j, act, 0)
    }
#undef F64X4_E
    *ah = a0;
    *al = b0;
    if (STORE) *ninf -= _mm512_reduce_add_epi64(ni);
}

/* the lanes' grid parts (exact in any order) and remainders as S_hi + S_lo */
AI4 void f64x4_total(__m512d ah, __m512d al, double *shi, double *slo) {
    double h = _mm512_reduce_add_pd(ah);  /* exact: multiples of the grid's ulp */
    double l = _mm512_reduce_add_pd(al);
    double s = h + l, bb = s - h;
    *slo = (h - (s - bb)) + (l - bb);     /* TwoSum: h may be 0 */
    *shi = s;
}

/* softmax of one float64 row with a finite maximum m: the outputs, returns
 * the underflow count (as softmax_row_prob) */
AI4 int64_t f64x4_prob_t(const double *x, double *o, Py_ssize_t C, double m, double t,
                         double *ph, double *pl, const int HAS_T) {
    __m512d ah = _mm512_setzero_pd(), al = _mm512_setzero_pd();
    int64_t ninf = 0;
    f64x4_exp_sum(x, 0, C, m, t, grid_sigma(1.0, C), 0, ph, pl, &ah, &al, &ninf, HAS_T, 1);
    double shi, slo;
    f64x4_total(ah, al, &shi, &slo);
    const __m512d iv = _mm512_set1_pd(1.0 / shi), sh = _mm512_set1_pd(shi),
                  sl = _mm512_set1_pd(slo);
    const __m512i one = _mm512_set1_epi64(-1);
    __m512i z = _mm512_setzero_si512();  /* per-lane counts (negated) of stored zeros */
#define F64X4_P(J, ACT, FULL)                                                   \
    {                                                                           \
        __m512d h = FULL ? _mm512_loadu_pd(ph + (J)) : _mm512_maskz_loadu_pd((ACT), ph + (J)); \
        __m512d l = FULL ? _mm512_loadu_pd(pl + (J)) : _mm512_maskz_loadu_pd((ACT), pl + (J)); \
        __m512d q = _mm512_mul_pd(h, iv);                                       \
        __m512d rr = _mm512_fnmadd_pd(q, sh, h);   /* h - q S_hi */             \
        __m512d tt = _mm512_fnmadd_pd(q, sl, _mm512_add_pd(rr, l));             \
        __m512d v = _mm512_fmadd_pd(tt, iv, q);                                 \
        if (FULL) _mm512_storeu_pd(o + (J), v);                                 \
        else _mm512_mask_storeu_pd(o + (J), (ACT), v);                          \
        z = _mm512_mask_add_epi64(z, _mm512_mask_cmp_pd_mask((ACT), v, _mm512_setzero_pd(), \
                                                             _CMP_EQ_OQ), z, one); \
    }
    Py_ssize_t j = 0;
    for (; j + 8 <= C; j += 8) F64X4_P(j, 0xff, 1)
    if (j < C) F64X4_P(j, (__mmask8)((1u << (C - j)) - 1u), 0)
#undef F64X4_P
    return -_mm512_reduce_add_epi64(z) - ninf;
}

/* one pass over a float64 row: its maximum *m, the first index *k of it,
 * the largest entry other than that one *m2 (= *m for ties) and whether a
 * NaN is present (then the rest is meaningless). Per lane: the running
 * maximum (replaced only by a strictly larger entry, so the lane keeps its
 * first occurrence, its index beside it) and the running second
 * max(m2, min(m1, v)); the lanes merged at the end. The maximum is compared
 * as a value: -0 and +0 are equal (first_index's x == m) and the maximum's
 * sign of zero may differ from row_max's, which changes no output (x - m is
 * then +-0, exp 1; log-softmax overwrites the entry k). */
AI4 void f64x4_top2(const double *x, Py_ssize_t C, double *m, Py_ssize_t *k, double *m2,
                    int *has_nan) {
    const __m512d ninfv = _mm512_set1_pd(-INFINITY);
    __m512d m1v = ninfv, m2v = ninfv;
    __m512i iv = _mm512_set1_epi64(INT64_MAX), jv = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i eight = _mm512_set1_epi64(8);
    __mmask8 nan = 0;
    Py_ssize_t j = 0;
#define F64X4_T2(ACT, FULL)                                                     \
    {                                                                           \
        __m512d v = f64x4_ld(x, j, (ACT), (FULL));                              \
        __mmask8 gt = _mm512_cmp_pd_mask(v, m1v, _CMP_GT_OQ);                   \
        nan |= _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q);                          \
        m2v = _mm512_max_pd(m2v, _mm512_min_pd(m1v, v));                        \
        m1v = _mm512_mask_mov_pd(m1v, gt, v);                                   \
        iv = _mm512_mask_mov_epi64(iv, gt, jv);                                 \
        jv = _mm512_add_epi64(jv, eight);                                       \
    }
    for (; j + 8 <= C; j += 8) F64X4_T2(0xff, 1)
    if (j < C) F64X4_T2((__mmask8)((1u << (C - j)) - 1u), 0)
#undef F64X4_T2
    *has_nan = nan != 0;
    double mm = _mm512_reduce_max_pd(m1v);
    __mmask8 at = _mm512_cmp_pd_mask(m1v, _mm512_set1_pd(mm), _CMP_EQ_OQ);
    int64_t kk = _mm512_mask_reduce_min_epi64(at, iv);
    /* the lane holding k gives its second; the other lanes their maximum */
    __mmask8 kl = _mm512_cmp_epi64_mask(iv, _mm512_set1_epi64(kk), _MM_CMPINT_EQ);
    *m2 = _mm512_reduce_max_pd(_mm512_mask_mov_pd(m1v, kl, m2v));
    *m = mm;
    *k = mm > -INFINITY ? (Py_ssize_t)kk : 0;
}

/* log-softmax of one float64 row with a finite maximum m at k (first index),
 * m2 the largest other entry: rest_lse's L, then the outputs; returns the underflow count (as
 * softmax_row_log) */
AI4 int64_t f64x4_log_t(const double *x, double *o, Py_ssize_t C, double m, Py_ssize_t k,
                        double m2, double t, const int HAS_T) {
    double lh = 0.0, ll = 0.0;
    double z2 = HAS_T ? (m2 - m) / t : (m2 - m);
    if (m2 > -INFINITY && z2 >= -1000.0) {
        /* as rest_lse: the grid scaled to the largest term, tiny rows by 2^K */
        int e;
        if (z2 < -700.0) e = (int)floor(z2 * LOG2E) + 1;
        else frexp(exp(z2), &e);
        int64_t K = e < -900 ? (int64_t)(-e) : 0;
        if (K > 1000) K = 1000;
        double sigma = grid_sigma(exp(z2 + (double)K * LN2HI), C);
        __m512d ah = _mm512_setzero_pd(), al = _mm512_setzero_pd();
        f64x4_exp_sum(x, 0, k, m, t, sigma, K, NULL, NULL, &ah, &al, NULL, HAS_T, 0);
        f64x4_exp_sum(x, k + 1, C, m, t, sigma, K, NULL, NULL, &ah, &al, NULL, HAS_T, 0);
        double shi, slo;
        f64x4_total(ah, al, &shi, &slo);
        if (K) { shi = ldexp(shi, (int)-K); slo = ldexp(slo, (int)-K); }
        log1p_dd(shi, slo, &lh, &ll);
    }
    const __m512d mv = _mm512_set1_pd(m), tv = _mm512_set1_pd(t), ti = _mm512_set1_pd(1.0 / t);
    const __m512d lhv = _mm512_set1_pd(lh), nlh = _mm512_set1_pd(-lh), llv = _mm512_set1_pd(ll);
    const __m512d lim = _mm512_set1_pd(LOG_UNDER[DT_F64]), ninfv = _mm512_set1_pd(-INFINITY);
    const __m512i one = _mm512_set1_epi64(-1);
    __m512i z = _mm512_setzero_si512();  /* per-lane counts (negated) of v < LOG_UNDER */
#define F64X4_L(J, ACT, FULL)                                                   \
    {                                                                           \
        __m512d xv = f64x4_ld(x, (J), (ACT), (FULL)), q, c;                     \
        f64x4_shift(xv, mv, tv, ti, &q, &c, HAS_T);                             \
        __m512d s = _mm512_sub_pd(q, lhv);                                      \
        __m512d bv = _mm512_sub_pd(s, q);                                       \
        __m512d e1 = _mm512_add_pd(_mm512_sub_pd(q, _mm512_sub_pd(s, bv)), _mm512_sub_pd(nlh, bv)); \
        __m512d v = _mm512_add_pd(s, _mm512_sub_pd(_mm512_add_pd(e1, c), llv)); \
        __mmask8 qi = _mm512_cmp_pd_mask(q, ninfv, _CMP_EQ_OQ);                 \
        v = _mm512_mask_mov_pd(v, qi, ninfv);                                   \
        if (FULL) _mm512_storeu_pd(o + (J), v);                                 \
        else _mm512_mask_storeu_pd(o + (J), (ACT), v);                          \
        __mmask8 fx = _mm512_mask_cmp_pd_mask((ACT), xv, ninfv, _CMP_NEQ_OQ);   \
        z = _mm512_mask_add_epi64(z, _mm512_mask_cmp_pd_mask(fx, v, lim, _CMP_LT_OQ), z, one); \
    }
    Py_ssize_t j = 0;
    for (; j + 8 <= C; j += 8) F64X4_L(j, 0xff, 1)
    if (j < C) F64X4_L(j, (__mmask8)((1u << (C - j)) - 1u), 0)
#undef F64X4_L
    o[k] = -(lh + ll);
    return -_mm512_reduce_add_epi64(z);
}

/* softmax of one float64 row (finite maximum m; pl C doubles of scratch, ph
 * unused): the outputs, returns the underflow count */
SMX_V4 __attribute__((noinline, unused)) static int64_t
f64x4_row_prob(const double *x, double *o, Py_ssize_t C, double m, double t, double *ph,
               double *pl, int has_t) {
    (void)ph;  /* the hi words go to o itself: 1/3 less in cache than ph + pl (measured
                * 65 -> 53 ms on 1024 x 32000) */
    return has_t ? f64x4_prob_t(x, o, C, m, t, o, pl, 1) : f64x4_prob_t(x, o, C, m, t, o, pl, 0);
}

/* log-softmax of one float64 row: f64x4_top2, then (when the row is not
 * special: *special = 1, nothing written) the outputs; the maximum and its
 * first index to *m, *k; returns the underflow count */
SMX_V4 __attribute__((noinline, unused)) static int64_t
f64x4_row_log(const double *x, double *o, Py_ssize_t C, double t, int has_t, double *m,
              Py_ssize_t *k, int *special) {
    double m2;
    int has_nan;
    f64x4_top2(x, C, m, k, &m2, &has_nan);
    *special = has_nan || !(*m - *m == 0.0);
    if (*special) return 0;
    return has_t ? f64x4_log_t(x, o, C, *m, *k, m2, t, 1) : f64x4_log_t(x, o, C, *m, *k, m2, t, 0);
}
#define HAVE_F64X4_ROWS 1
#else
#define HAVE_F64X4_ROWS 0
#endif

#endif
