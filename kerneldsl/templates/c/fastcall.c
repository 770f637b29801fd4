/* kerneldsl's call path in C: a compiled function called again with arrays of the shapes,
 * strides and dtypes of a call it has seen runs its kernels with no Python in between.
 *
 * A FastCall holds the module's entry point and, once primed by the Python path
 * (runtime/callable.py), the signature of one call: every input's dims and strides, the entry's
 * meta block (sizes and strides) for it, the output shapes and the temporaries (kept and reused).
 * A call that matches (exact numpy arrays, same dtypes, native byte order, aligned, same dims and
 * strides) allocates its outputs, fills the pointers and runs the entry with the GIL released;
 * anything else, a kernel's error included, goes to the Python path, which checks everything and
 * raises the precise error. Built once per Python and numpy (runtime/fastcall.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef int (*kd_entry_fn)(void **bufs, const int64_t *meta, int64_t *report);

enum { KD_SINGLE = 0, KD_TUPLE = 1, KD_LIST = 2 };

typedef struct {
    PyObject_HEAD
    kd_entry_fn entry;
    PyObject *slow;       /* the Python path: slow(*args) -> the result */
    int n_in, n_out, n_temp, returns;
    int *in_type, *in_ndim, *out_type, *out_ndim;
    /* the primed call */
    int primed, busy;
    npy_intp *sig;        /* per input: its dims, then its strides (bytes) */
    int64_t *meta;
    Py_ssize_t n_meta;
    npy_intp *out_dims;   /* per output: its dims */
    PyObject *temps;      /* a tuple of the temporaries' arrays */
    void **ptrs;
    Py_ssize_t n_sig, n_dims;
    PyObject *weakrefs;   /* the slow path refers to its caller weakly: no cycle holds a library */
} FastCall;

static void fc_forget(FastCall *self)
{
    self->primed = 0;
    PyMem_Free(self->sig); self->sig = NULL;
    PyMem_Free(self->meta); self->meta = NULL;
    PyMem_Free(self->out_dims); self->out_dims = NULL;
    Py_CLEAR(self->temps);
}

/* the slow path is a method of the Function that holds this object: a cycle the GC collects */
static int fc_traverse(FastCall *self, visitproc visit, void *arg)
{
    Py_VISIT(self->slow);
    Py_VISIT(self->temps);
    return 0;
}

static int fc_clear(FastCall *self)
{
    self->primed = 0;
    Py_CLEAR(self->slow);
    Py_CLEAR(self->temps);
    return 0;
}

static void fc_dealloc(FastCall *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakrefs)
        PyObject_ClearWeakRefs((PyObject *)self);
    fc_forget(self);
    Py_XDECREF(self->slow);
    PyMem_Free(self->in_type); PyMem_Free(self->in_ndim);
    PyMem_Free(self->out_type); PyMem_Free(self->out_ndim);
    PyMem_Free(self->ptrs);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int *int_list(PyObject *seq, int *n)
{
    PyObject *fast = PySequence_Fast(seq, "a sequence of ints");
    if (!fast)
        return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    int *out = PyMem_Calloc(len ? len : 1, sizeof(int));
    for (Py_ssize_t k = 0; out && k < len; ++k) {
        out[k] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, k));
    }
    Py_DECREF(fast);
    if (PyErr_Occurred()) {
        PyMem_Free(out);
        return NULL;
    }
    *n = (int)len;
    return out;
}

/* FastCall(entry_address, slow, in_types, in_ndims, out_types, out_ndims, n_temp, returns) */
static int fc_init(FastCall *self, PyObject *args, PyObject *kw)
{
    unsigned long long address;
    PyObject *slow, *in_types, *in_ndims, *out_types, *out_ndims;
    int n_temp, returns, n;
    if (!PyArg_ParseTuple(args, "KOOOOOii", &address, &slow, &in_types, &in_ndims, &out_types, &out_ndims,
                          &n_temp, &returns))
        return -1;
    self->entry = (kd_entry_fn)(uintptr_t)address;
    Py_INCREF(slow);
    Py_XSETREF(self->slow, slow);
    if (!(self->in_type = int_list(in_types, &self->n_in)) || !(self->in_ndim = int_list(in_ndims, &n)) ||
        !(self->out_type = int_list(out_types, &self->n_out)) || !(self->out_ndim = int_list(out_ndims, &n)))
        return -1;
    self->n_temp = n_temp;
    self->returns = returns;
    self->ptrs = PyMem_Calloc(self->n_in + self->n_out + n_temp + 1, sizeof(void *));
    return self->ptrs ? 0 : -1;
}

/* remember(arrays, meta, out_shapes, temps): the call the Python path just made */
static PyObject *fc_remember(FastCall *self, PyObject *args)
{
    PyObject *arrays, *meta, *shapes, *temps;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyTuple_Type, &arrays, &PyBytes_Type, &meta, &PyTuple_Type, &shapes,
                          &PyTuple_Type, &temps))
        return NULL;
    if (self->busy)  /* another thread's call runs on the remembered temporaries */
        Py_RETURN_NONE;
    if (PyTuple_GET_SIZE(arrays) != self->n_in || PyTuple_GET_SIZE(shapes) != self->n_out ||
        PyTuple_GET_SIZE(temps) != self->n_temp) {
        PyErr_SetString(PyExc_ValueError, "remember: wrong number of arrays, shapes or temporaries");
        return NULL;
    }
    fc_forget(self);
    Py_ssize_t n_sig = 0, n_dims = 0;
    for (int k = 0; k < self->n_in; ++k)
        n_sig += 2 * self->in_ndim[k];
    for (int k = 0; k < self->n_out; ++k)
        n_dims += self->out_ndim[k];
    self->sig = PyMem_Calloc(n_sig + 1, sizeof(npy_intp));
    self->out_dims = PyMem_Calloc(n_dims + 1, sizeof(npy_intp));
    self->n_meta = PyBytes_GET_SIZE(meta) / (Py_ssize_t)sizeof(int64_t);
    self->meta = PyMem_Malloc(PyBytes_GET_SIZE(meta) + sizeof(int64_t));
    if (!self->sig || !self->out_dims || !self->meta)
        return PyErr_NoMemory();
    memcpy(self->meta, PyBytes_AS_STRING(meta), PyBytes_GET_SIZE(meta));
    npy_intp *s = self->sig;
    for (int k = 0; k < self->n_in; ++k) {
        PyObject *o = PyTuple_GET_ITEM(arrays, k);
        if (!PyArray_CheckExact(o) || PyArray_NDIM((PyArrayObject *)o) != self->in_ndim[k]) {
            PyErr_SetString(PyExc_TypeError, "remember: inputs must be numpy arrays of the placeholders' ranks");
            return NULL;
        }
        PyArrayObject *a = (PyArrayObject *)o;
        int nd = PyArray_NDIM(a);
        memcpy(s, PyArray_DIMS(a), nd * sizeof(npy_intp));
        memcpy(s + nd, PyArray_STRIDES(a), nd * sizeof(npy_intp));
        s += 2 * nd;
    }
    npy_intp *d = self->out_dims;
    for (int k = 0; k < self->n_out; ++k) {
        PyObject *shape = PyTuple_GET_ITEM(shapes, k);
        if (!PyTuple_Check(shape) || PyTuple_GET_SIZE(shape) != self->out_ndim[k]) {
            PyErr_SetString(PyExc_TypeError, "remember: output shapes must be tuples of the outputs' ranks");
            return NULL;
        }
        for (int j = 0; j < self->out_ndim[k]; ++j)
            *d++ = PyLong_AsSsize_t(PyTuple_GET_ITEM(shape, j));
    }
    if (PyErr_Occurred())
        return NULL;
    for (int k = 0; k < self->n_temp; ++k) {
        PyObject *o = PyTuple_GET_ITEM(temps, k);
        if (!PyArray_CheckExact(o)) {
            PyErr_SetString(PyExc_TypeError, "remember: temporaries must be numpy arrays");
            return NULL;
        }
        self->ptrs[self->n_in + self->n_out + k] = PyArray_DATA((PyArrayObject *)o);
    }
    Py_INCREF(temps);
    self->temps = temps;
    self->n_sig = n_sig;
    self->n_dims = n_dims;
    self->primed = 1;
    Py_RETURN_NONE;
}

static PyObject *fc_slow(FastCall *self, PyObject *args, PyObject *kw)
{
    if (!self->slow) {
        PyErr_SetString(PyExc_RuntimeError, "this function has been released");
        return NULL;
    }
    return PyObject_Call(self->slow, args, kw);
}

/* the byte range [lo, hi) an array's elements span */
static void span(PyArrayObject *a, char **lo, char **hi)
{
    char *l = PyArray_BYTES(a), *h = l;
    for (int k = 0; k < PyArray_NDIM(a); ++k) {
        npy_intp step = (PyArray_DIM(a, k) - 1) * PyArray_STRIDE(a, k);
        if (step < 0)
            l += step;
        else
            h += step;
    }
    *lo = l;
    *hi = h + PyArray_ITEMSIZE(a);
}

/* `given` (an array, or None: a new one) as output k, or NULL when it is not one the remembered
 * call could write: C-contiguous, aligned, writeable, of the output's dtype and shape, sharing
 * no memory with an input */
static PyObject *output(FastCall *self, int k, const npy_intp *dims, PyObject *given, PyObject *args)
{
    if (given == NULL || given == Py_None)
        return PyArray_SimpleNew(self->out_ndim[k], (npy_intp *)dims, self->out_type[k]);
    if (!PyArray_CheckExact(given))
        return NULL;
    PyArrayObject *o = (PyArrayObject *)given;
    if (PyArray_TYPE(o) != self->out_type[k] || PyArray_NDIM(o) != self->out_ndim[k] ||
        memcmp(PyArray_DIMS(o), dims, self->out_ndim[k] * sizeof(npy_intp)) || !PyArray_IS_C_CONTIGUOUS(o) ||
        !PyArray_ISALIGNED(o) || !PyArray_ISWRITEABLE(o) || !PyArray_ISNOTSWAPPED(o))
        return NULL;
    char *lo, *hi;
    span(o, &lo, &hi);
    for (int j = 0; j < self->n_in; ++j) {
        char *alo, *ahi;
        span((PyArrayObject *)PyTuple_GET_ITEM(args, j), &alo, &ahi);
        if (alo < hi && lo < ahi)
            return NULL;
    }
    Py_INCREF(given);
    return given;
}

static PyObject *fc_run(FastCall *self, PyObject *args, PyObject *outs_given, PyObject *kw)
{
    if (kw || !self->primed || self->busy || !self->slow || PyTuple_GET_SIZE(args) != self->n_in ||
        (outs_given && PyTuple_GET_SIZE(outs_given) != self->n_out))
        return NULL;
    const npy_intp *s = self->sig;
    for (int k = 0; k < self->n_in; ++k) {
        PyObject *o = PyTuple_GET_ITEM(args, k);
        if (!PyArray_CheckExact(o))
            return NULL;
        PyArrayObject *a = (PyArrayObject *)o;
        int nd = self->in_ndim[k];
        if (PyArray_TYPE(a) != self->in_type[k] || PyArray_NDIM(a) != nd || !PyArray_ISNOTSWAPPED(a) ||
            !PyArray_ISALIGNED(a) || memcmp(PyArray_DIMS(a), s, nd * sizeof(npy_intp)) ||
            memcmp(PyArray_STRIDES(a), s + nd, nd * sizeof(npy_intp)))
            return NULL;
        self->ptrs[k] = PyArray_DATA(a);
        s += 2 * nd;
    }
    PyObject *outs[64];
    PyObject **out = self->n_out <= 64 ? outs : PyMem_Malloc(self->n_out * sizeof(PyObject *));
    if (!out)
        return PyErr_NoMemory();
    const npy_intp *d = self->out_dims;
    int made = 0;
    for (; made < self->n_out; ++made) {
        out[made] = output(self, made, d, outs_given ? PyTuple_GET_ITEM(outs_given, made) : NULL, args);
        if (!out[made])
            break;
        self->ptrs[self->n_in + made] = PyArray_DATA((PyArrayObject *)out[made]);
        d += self->out_ndim[made];
    }
    PyObject *result = NULL;
    if (made == self->n_out) {
        int64_t report[2] = {0, 0};
        int rc;
        self->busy = 1;  /* the temporaries are this call's until it returns */
        Py_BEGIN_ALLOW_THREADS
        rc = self->entry(self->ptrs, self->meta, report);
        Py_END_ALLOW_THREADS
        self->busy = 0;
        if (rc == 0 && self->returns == KD_SINGLE) {
            result = out[0];
            out[0] = NULL;
        } else if (rc == 0) {
            result = self->returns == KD_LIST ? PyList_New(self->n_out) : PyTuple_New(self->n_out);
            for (int k = 0; result && k < self->n_out; ++k) {
                if (self->returns == KD_LIST)
                    PyList_SET_ITEM(result, k, out[k]);
                else
                    PyTuple_SET_ITEM(result, k, out[k]);
                out[k] = NULL;
            }
        }  /* a kernel's error: the Python path runs again and raises it */
    }
    for (int k = 0; k < made; ++k)
        Py_XDECREF(out[k]);
    if (out != outs)
        PyMem_Free(out);
    return result;
}

static PyObject *fc_call(FastCall *self, PyObject *args, PyObject *kw)
{
    PyObject *result = fc_run(self, args, NULL, kw);
    if (result || PyErr_Occurred())
        return result;
    return fc_slow(self, args, kw);
}

/* into(args, outs): a call writing output k into outs[k] (None: a new array) */
static PyObject *fc_into(FastCall *self, PyObject *pair)
{
    PyObject *args, *outs;
    if (!PyArg_ParseTuple(pair, "O!O!", &PyTuple_Type, &args, &PyTuple_Type, &outs))
        return NULL;
    PyObject *result = fc_run(self, args, outs, NULL);
    if (result || PyErr_Occurred())
        return result;
    PyObject *kw = Py_BuildValue("{sO}", "out", outs);
    if (!kw)
        return NULL;
    result = fc_slow(self, args, kw);
    Py_DECREF(kw);
    return result;
}

static PyObject *fc_primed(FastCall *self, void *closure)
{
    return PyBool_FromLong(self->primed);
}

static PyMethodDef fc_methods[] = {
    {"remember", (PyCFunction)fc_remember, METH_VARARGS, "remember(arrays, meta, out_shapes, temps)"},
    {"into", (PyCFunction)fc_into, METH_VARARGS, "into(args, outs): a call writing into outs (None: new)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef fc_getset[] = {
    {"primed", (getter)fc_primed, NULL, "whether a call has been remembered", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kerneldsl_fastcall.FastCall",
    .tp_basicsize = sizeof(FastCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_weaklistoffset = offsetof(FastCall, weakrefs),
    .tp_traverse = (traverseproc)fc_traverse,
    .tp_clear = (inquiry)fc_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fc_init,
    .tp_dealloc = (destructor)fc_dealloc,
    .tp_call = (ternaryfunc)fc_call,
    .tp_methods = fc_methods,
    .tp_getset = fc_getset,
};

static struct PyModuleDef fc_module = {PyModuleDef_HEAD_INIT, "kerneldsl_fastcall", NULL, -1, NULL};

PyMODINIT_FUNC PyInit_kerneldsl_fastcall(void)
{
    import_array();
    if (PyType_Ready(&FastCallType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fc_module);
    if (!m)
        return NULL;
    Py_INCREF(&FastCallType);
    if (PyModule_AddObject(m, "FastCall", (PyObject *)&FastCallType) < 0) {
        Py_DECREF(&FastCallType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
