/* _smx_xent.h: cross-entropy with class indices and with
 * probability targets, one sweep per row, with their Python glue.
 * Included once, by _smx_native.c (one translation unit, so every kernel
 * inlines into each CPU variant); not a public header. */
#ifndef SMX_XENT_H
#define SMX_XENT_H

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
/* Python glue: cross-entropy                                               */

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


#endif
