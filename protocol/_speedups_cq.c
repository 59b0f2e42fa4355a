/* protocol/_speedups_cq.c: a pull's walk over ConsumeQueue entries without a filter
 * (``StoreReads._take_all``, broker/store/reads.py).
 *
 * ``take_all(data, offset, max_count, max_bytes, min_physical)`` walks the 20-byte entries
 * in ``data`` (physical offset int64, size int32, tag code int64, big-endian; the first is
 * queue offset ``offset``) as ``_take_all`` does and answers ``(status, next_begin,
 * picked)``: status 0 (NO_MATCHED_MESSAGE), 1 (MESSAGE_WAS_REMOVING) or 2 (FOUND), the
 * next begin offset, and the picked ``(queue offset, physical offset, size)`` tuples. The
 * caller maps ``next_begin == offset`` to its None. For anything else (bytes that are no
 * whole number of entries, numbers out of range) it answers None and the Python walk,
 * the definition, runs. */

#include "_speedups.h"

#define CQ_ENTRY_BYTES 20

PyObject *
rmq_take_all(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "take_all takes 5 arguments");
        return NULL;
    }
    int ok = 1;
    long long offset = ranged(args[1], 0, INT64_MAX_VALUE, &ok);
    long long max_count = ranged(args[2], 1, INT64_MAX_VALUE, &ok);
    long long max_bytes = ranged(args[3], 1, 1LL << 62, &ok); /* total + size stays int64 */
    long long min_physical = ranged(args[4], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    if (!ok) {
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_ssize_t count = view.len / CQ_ENTRY_BYTES;
    /* struct.iter_unpack's own refusal, and queue offsets that stay int64. */
    if (view.len % CQ_ENTRY_BYTES != 0 || offset > INT64_MAX_VALUE - count) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    PyObject *picked = PyList_New(0);
    if (picked == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)view.buf;
    int status = 0;
    long long total = 0;
    long long next_begin = offset;
    for (Py_ssize_t i = 0; i < count; i++, p += CQ_ENTRY_BYTES) {
        long long phys = (long long)(int64_t)get_be(p, 8);
        long long size = (long long)(int32_t)get_be(p + 8, 4);
        long long queue_offset = offset + i;
        if (size <= 0 || phys < 0) {
            break; /* unwritten: where decode_entries stops */
        }
        Py_ssize_t taken = PyList_GET_SIZE(picked);
        /* No overflow: total <= max(max_bytes, 2**31) (an entry past max_bytes is taken
         * only first), max_bytes <= 2**62 and size < 2**31. */
        if (taken > 0 && (taken >= max_count || total + size > max_bytes)) {
            break;
        }
        next_begin = queue_offset + 1;
        if (phys < min_physical) {
            if (taken == 0) {
                status = 1;
            }
            continue;
        }
        PyObject *item = Py_BuildValue("(LLL)", queue_offset, phys, size);
        if (item == NULL || PyList_Append(picked, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(picked);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(item);
        total += size;
        status = 2;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(iLN)", status, next_begin, picked);
}
