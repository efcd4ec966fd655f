/* _smx_softmax.h: softmax, log-softmax (float64 pair path, 16/32-bit
 * single-word path, narrow rows) and logsumexp, with their Python glue.
 * float64 rows wider than the narrow path's run softmax_row_prob /
 * softmax_row_log (gcc-vectorised through the variants), except on the
 * AVX-512 variant, where they run the intrinsics rows of _smx_f64x4.h (same
 * arithmetic, a table-driven exp; log-softmax's maxima in one pass).
 * Included once, by _smx_native.c (one translation unit, so every kernel
 * inlines into each CPU variant); not a public header. */
#ifndef SMX_SOFTMAX_H
#define SMX_SOFTMAX_H

#include "_smx_lowp.h"
#include "_smx_f64x4.h"

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
#if HAVE_F64X4_ROWS
    if (DT == DT_F64 && g_isa == ISA_AVX512) {  /* the AVX-512 variant: intrinsics */
        S->exp_underflow += f64x4_row_prob((const double *)x, (double *)o, C, m, A->t, ph, pl,
                                           HAS_T);
        return;
    }
#endif
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



/* 16/32-bit rows: lowp_exp_sum_w (budget in _smx_lowp.h), then the outputs
 * in chunks of CH_W: computed into a float64 buffer, stored by store_w (one
 * rounding each) */
AI void lowp_row_prob(const sm_args *A, const void *x, void *o, double m, stats_t *S,
                      const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
#if HAVE_X4_ROWS
    if (g_isa == ISA_AVX512 && C < X4_MAX_C) {  /* the AVX-512 variant: intrinsics */
        int64_t zx = lowp_x4_row(x, o, C, m, A->t, A->ph, DT, HAS_T, 0);
        if (zx) zx -= count_neginf(x, C, DT);
        S->exp_underflow += zx;
        return;
    }
#endif
    double *ph = A->ph;
    double sum = lowp_exp_sum_w(x, C, m, A->t, ph, NULL, NULL, DT, HAS_T, USE_FMA, 1, 0);
    double inv = 1.0 / sum;
    int64_t z = 0;
    for (Py_ssize_t jb = 0; jb < C; jb += CH_W) {
        Py_ssize_t n = C - jb < CH_W ? C - jb : CH_W;
        z += store_w(o, jb, n, ph + jb, inv, DT, USE_FMA, 1);
    }
    if (z) z -= count_neginf(x, C, DT);  /* -inf entries are exact zeros, not underflows */
    S->exp_underflow += z;
}

AI void lowp_row_log(const sm_args *A, const void *x, void *o, double m, stats_t *S,
                     const int DT, const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    double t = A->t;
#if HAVE_X4_ROWS
    if (g_isa == ISA_AVX512 && C < X4_MAX_C) {  /* the AVX-512 variant: intrinsics */
        int64_t zx = lowp_x4_row(x, o, C, m, t, NULL, DT, HAS_T, 1);
        if (zx) zx -= count_neginf(x, C, DT);
        S->exp_underflow += zx;
        return;
    }
#endif
    int64_t n0;
    double rest = lowp_exp_sum_w(x, C, m, t, NULL, &n0, NULL, DT, HAS_T, USE_FMA, 0, 1);
    double L = log1p((double)(n0 - 1) + rest);
    double lim = LOG_UNDER[DT];
    int64_t z = 0;
    if (DT == DT_F16 || DT == DT_BF16) {
        /* widen a chunk (F16C for float16 on AVX2/AVX-512), compute, store the
         * chunk (f16c_store): a loop over the raw 16-bit input spills */
        double v[CH_W];
        for (Py_ssize_t jb = 0; jb < C; jb += CH_W) {
            Py_ssize_t n = C - jb < CH_W ? C - jb : CH_W;
            load_w(x, jb, n, v, DT, USE_FMA);
            int64_t zb = 0;
            for (Py_ssize_t j = 0; j < n; j++) {
                double q = v[j] - m;
                if (HAS_T) q = q / t;
                double w = -(L - q); /* = q - L; -0.0 for the max of a one-entry row */
                v[j] = w;
                zb += w < lim;
            }
            z += zb;
            store_w(o, jb, n, v, 1.0, DT, USE_FMA, 0);
        }
    } else {
        for (Py_ssize_t j = 0; j < C; j++) {
            double q = ld(x, j, DT) - m;
            if (HAS_T) q = q / t;
            double w = -(L - q);
            st(o, j, w, DT);
            z += w < lim;
        }
    }
    if (z) z -= count_neginf(x, C, DT);  /* -inf entries are not underflows */
    S->exp_underflow += z;
}

/* Narrow rows (C <= NARROW_C) of 16/32-bit formats: blocks of NR rows, with
 * the exp and output loops running over the flattened block (the row's max,
 * 1/S or L expanded per entry) so they vectorise across rows; the row sums are
 * plain sums of <= NARROW_C terms (<= 15 u, inside the budget in _smx_lowp.h).
 * Special rows (NaN, +-inf max) get NaN in the flat loops (not counted as
 * underflows) and are then rewritten by special_row. */
#define NARROW_C 16
#define NR 64
AI void lowp_narrow_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int DT,
                      const int HAS_T, const int USE_FMA, const int KIND) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    double t = A->t;
    double mm[NR * NARROW_C], vv[NR * NARROW_C], eb[NR * NARROW_C], xd[NR * NARROW_C], rm[NR],
        rv[NR];
    unsigned char sp[NR];
    for (Py_ssize_t rb = r0; rb < r1; rb += NR) {
        Py_ssize_t nr = r1 - rb < NR ? r1 - rb : NR;
        Py_ssize_t n = nr * C;
        const char *xb = (const char *)A->x + (size_t)rb * C * isz;
        char *ob = (char *)A->out + (size_t)rb * C * isz;
        for (Py_ssize_t r = 0; r < nr; r++) {
            int has_nan;
            double m = row_max_w(xb + (size_t)r * C * isz, C, &has_nan, DT);
            sp[r] = has_nan || !(m - m == 0.0);
            rm[r] = sp[r] ? NAN : m;
        }
        load_w(xb, 0, n, xd, DT, USE_FMA);
        for (Py_ssize_t r = 0; r < nr; r++)
            for (Py_ssize_t j = 0; j < C; j++) mm[r * C + j] = rm[r];
        for (Py_ssize_t i = 0; i < n; i++) {
            double q = xd[i] - mm[i];
            if (HAS_T) q = q / t;
            double e = exp1w(q, USE_FMA);
            if (KIND) e = q == 0.0 ? 0.0 : e;
            eb[i] = e;
        }
        int64_t ninf = 0;
        for (Py_ssize_t r = 0; r < nr; r++) {
            double sum = 0.0;
            int64_t n0 = 0;
            for (Py_ssize_t j = 0; j < C; j++) {
                double xv = xd[r * C + j];
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
        if (KIND) {
            for (Py_ssize_t i = 0; i < n; i++) {
                double q = xd[i] - mm[i];
                if (HAS_T) q = q / t;
                double v = -(vv[i] - q);
                under += v < lim;
                eb[i] = v;
            }
            store_w(ob, 0, n, eb, 1.0, DT, USE_FMA, 0);
        } else {
            for (Py_ssize_t i = 0; i < n; i++) eb[i] *= vv[i];
            int64_t z = store_w(ob, 0, n, eb, 1.0, DT, USE_FMA, 0);
            /* NaN (special rows) is not a zero: no correction needed */
            under += z;
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

#include "_smx_narrow64.h"

AI void softmax_rows_t(const sm_args *A, Py_ssize_t r0, Py_ssize_t r1, stats_t *S, const int DT,
                       const int HAS_T, const int USE_FMA) {
    Py_ssize_t C = A->C;
    size_t isz = (size_t)ITEMSIZE[DT];
    if (DT != DT_F64 && C <= NARROW_C) {
        if (A->kind) lowp_narrow_t(A, r0, r1, S, DT, HAS_T, USE_FMA, 1);
        else lowp_narrow_t(A, r0, r1, S, DT, HAS_T, USE_FMA, 0);
        return;
    }
    if (DT == DT_F64 && C <= (A->kind ? NARROW64_LOG_C : NARROW64_C) && g_narrow64) { narrow64_rows(A, r0, r1, S, HAS_T, USE_FMA); return; }
#if HAVE_F64X4_ROWS
    if (DT == DT_F64 && A->kind == 1 && g_isa == ISA_AVX512) {
        /* the AVX-512 variant: one pass for the maximum, its index and the
         * second maximum, then the intrinsics row (_smx_f64x4.h) */
        for (Py_ssize_t r = r0; r < r1; r++) {
            const double *x = (const double *)A->x + (size_t)r * C;
            double *o = (double *)A->out + (size_t)r * C;
            double m;
            Py_ssize_t k;
            int sp;
            int64_t z = f64x4_row_log(x, o, C, A->t, HAS_T, &m, &k, &sp);
            if (sp) {
                int has_nan;
                m = row_max(x, 0, C, &has_nan, DT);
                special_row(A, x, o, m, has_nan, r, S, DT);
                continue;
            }
            S->exp_underflow += z;
            if (A->argmax) A->argmax[r] = k;
        }
        return;
    }
#endif
    for (Py_ssize_t r = r0; r < r1; r++) {
        const char *x = (const char *)A->x + (size_t)r * C * isz;
        char *o = (char *)A->out + (size_t)r * C * isz;
        int has_nan;
        double m = DT != DT_F64 ? row_max_w(x, C, &has_nan, DT) : row_max(x, 0, C, &has_nan, DT);
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
/* Python glue: softmax, logsumexp                                          */

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


#endif
