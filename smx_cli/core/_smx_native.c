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
 *     relative error only: they take the single-word path (_smx_lowp.h: a
 *     degree-10 minimax exp, blocked lane sums; its error budget is written
 *     there), rows of <= 16 columns in blocks of rows flattened so the loops
 *     vectorise across rows; their cross-entropy (_smx_xent.h) takes two
 *     passes on AVX-512 and AVX2 (a float32 max/top-5 pass, then a
 *     table-driven float64 exp; budget in its comment) and one sweep on the
 *     baseline
 *     (lowp_xent_sweep; probability targets: xp_sweep). The rest of this
 *     list is the float64 path (and logsumexp):
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
 * Layout: _smx_base.h (shared numerics), _smx_lowp.h (the 16/32-bit softmax
 * path's exp and sums), _smx_softmax.h (softmax, log-softmax, logsumexp),
 * _smx_f64x4.h (float64 softmax / log-softmax rows with AVX-512 intrinsics),
 * _smx_narrow64.h (float64 rows of <= 16 / 32 columns, vectorised across rows),
 * _smx_xent.h (cross-entropy and its gradient), _smx_vjp.h (VJPs), each with its
 * Python glue, all included here as one translation unit; this file holds the
 * CPU dispatch, the test hooks and the method table.
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
#include "_smx_dispatch.h"

/* kernel NAME_t(ARGS..., USE_FMA) -> NAME(ARGS...): the FMA variants pass 1 */
#define VARIANTS(NAME, PARAMS, ...) SMX_VARIANTS(NAME, PARAMS, 1, 1, 0, __VA_ARGS__)

#include "_smx_common.h"

#include "_smx_base.h"
#include "_smx_softmax.h"
#include "_smx_xent.h"
#include "_smx_vjp.h"

/* ------------------------------------------------------------------------ */
/* the module: CPU dispatch, test hooks, method table                       */

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

/* test hook: set_narrow64(on) -> old; off sends narrow float64 rows to the
 * per-row path (the narrow path's tests and bench compare the two) */
static PyObject *py_set_narrow64(PyObject *self, PyObject *args) {
    int on;
    if (!PyArg_ParseTuple(args, "p", &on)) return NULL;
    int old = g_narrow64;
    g_narrow64 = on;
    return PyBool_FromLong(old);
}

static PyMethodDef methods[] = {
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, out, dt, n, c, kind, t, masked_zero, r0, r1, argmax)"},
    {"logsumexp", py_logsumexp, METH_VARARGS, "logsumexp(x, out, dt, out_dt, n, c, t, r0, r1)"},
    {"xent", py_xent, METH_VARARGS, "xent(x, dt, n, c, target, weight, wsum, ignore_index, eps, r0, r1, "
                                    "loss, logp_true, p_true, argmax, top5, margin, entropy, fallback)"},
    {"xent_prob", py_xent_prob, METH_VARARGS,
     "xent_prob(x, dt, n, c, t, t64, weight, eps, r0, r1, loss, nll, logp_true, p_true, "
     "margin, entropy, residual, argmax, true_class, top5, fallback, target_sum)"},
    {"xent_grad", py_xent_grad, METH_VARARGS,
     "xent_grad(x, dt, n, c, target, prob, t64, weight, wsum, ignore_index, eps, r0, r1, out, fallback)"},
    {"vjp", py_vjp, METH_VARARGS, "vjp(x, g, out, dt, n, c, kind, t, r0, r1, fallback)"},
    {"isa", py_isa, METH_NOARGS, "instruction set of the running clone"},
    {"exp_hl", py_exp_hl, METH_VARARGS, "exp(x) as (hi, lo) (test hook)"},
    {"round16", py_round16, METH_VARARGS, "round16(src_f64, dst_u16, n, dt) (test hook)"},
    {"set_narrow64", py_set_narrow64, METH_VARARGS,
     "set_narrow64(on): narrow float64 rows on their own path (test hook); returns the old flag"},
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
