/* _smx_vjp.h: vector-Jacobian products of softmax and
 * log-softmax, with their Python glue.
 * Included once, by _smx_native.c (one translation unit, so every kernel
 * inlines into each CPU variant); not a public header. */
#ifndef SMX_VJP_H
#define SMX_VJP_H

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
            double sum = lowp_exp_sum_w(x, C, m, t, p, NULL, &ninf, DT, HAS_T, USE_FMA, 1, 0);
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
/* Python glue: vjp                                                         */

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


#endif
