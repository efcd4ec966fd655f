/* _smx_common.h: what both compiled modules (_smx_native.c, _smx_diag.c) share:
 * the dtype codes, the exact loads of float16/bfloat16/float32/float64 into a
 * double, and the buffer check of the CPython glue. Include after <Python.h>. */
#ifndef SMX_COMMON_H
#define SMX_COMMON_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define AI static inline __attribute__((always_inline))
#else
#define AI static inline
#endif

enum { DT_F16 = 0, DT_BF16 = 1, DT_F32 = 2, DT_F64 = 3 };
static const int ITEMSIZE[4] = {2, 2, 4, 8};

AI uint64_t asu64(double d) { uint64_t u; memcpy(&u, &d, 8); return u; }
AI double asf64(uint64_t u) { double d; memcpy(&d, &u, 8); return d; }
AI uint32_t asu32(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
AI float asf32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* float16 -> float32 (exact) */
AI float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t a = h & 0x7fffu;
    /* normals and subnormals: as a scaled float32, times 2^112 (exact) */
    float v = asf32(a << 13) * 0x1p112f;
    uint32_t bits = asu32(v);
    uint32_t special = 0x7f800000u | (a & 0x3ffu) << 13; /* inf / nan */
    bits = (a >= 0x7c00u) ? special : bits;
    return asf32(bits | sign);
}

AI float bf16_to_f32(uint16_t h) { return asf32((uint32_t)h << 16); }

/* entry j of a row of format DT, as a double (exact) */
AI double ld(const void *p, Py_ssize_t j, const int DT) {
    switch (DT) {
    case DT_F16: return (double)f16_to_f32(((const uint16_t *)p)[j]);
    case DT_BF16: return (double)bf16_to_f32(((const uint16_t *)p)[j]);
    case DT_F32: return (double)((const float *)p)[j];
    default: return ((const double *)p)[j];
    }
}

/* a C-contiguous buffer of at least `need` bytes (writable if asked) */
static int get_buf(PyObject *o, Py_buffer *b, int writable, Py_ssize_t need, const char *what) {
    if (PyObject_GetBuffer(o, b, PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0)) < 0)
        return -1;
    if (b->len < need) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes, need %zd", what, b->len, need);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

#endif
