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
 * the definition, runs.
 *
 * ``cut_records(span, start, picked, i, j, records, offsets)`` is ``StoreReads._result``'s
 * inner loop over ``picked[i:j]`` for a span read whole from CommitLog offset ``start``
 * with no damaged range about: each record cut from ``span``, checked to be a whole record
 * lying there (totalSize, magic V1/V2, its own physical offset), appended to ``records``
 * and its queue offset to ``offsets``. It answers the index it stopped at: ``j`` when all
 * were taken, else the first it could not take (the Python loop goes on from there,
 * refusing it as before); None (the loop does them all) when its arguments are not what
 * it expects. */

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

#define RECORD_HEAD_BYTES 36 /* totalSize, magic, 20 bytes, physicalOffset */
#define RECORD_PHYS_POS 28

PyObject *
rmq_cut_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "cut_records takes 7 arguments");
        return NULL;
    }
    PyObject *span = args[0], *picked = args[2], *records = args[5], *offsets = args[6];
    int ok = 1;
    long long start = ranged(args[1], 0, INT64_MAX_VALUE, &ok);
    long long i = ranged(args[3], 0, PY_SSIZE_T_MAX, &ok);
    long long j = ranged(args[4], 0, PY_SSIZE_T_MAX, &ok);
    if (!ok || !PyBytes_CheckExact(span) || !PyList_CheckExact(picked) ||
        !PyList_CheckExact(records) || !PyList_CheckExact(offsets) || i > j ||
        j > PyList_GET_SIZE(picked)) {
        Py_RETURN_NONE; /* the Python loop does picked[i:j] */
    }
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(span);
    long long span_len = (long long)PyBytes_GET_SIZE(span);
    Py_ssize_t k = (Py_ssize_t)i;
    for (; k < (Py_ssize_t)j; k++) {
        PyObject *item = PyList_GET_ITEM(picked, k);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
            break;
        }
        int item_ok = 1;
        long long phys = ranged(PyTuple_GET_ITEM(item, 1), 0, INT64_MAX_VALUE, &item_ok);
        long long size = ranged(PyTuple_GET_ITEM(item, 2), 0, INT64_MAX_VALUE, &item_ok);
        PyObject *queue_offset = PyTuple_GET_ITEM(item, 0);
        if (!item_ok || !PyLong_CheckExact(queue_offset) || phys < start) {
            break;
        }
        long long at = phys - start;
        if (size < RECORD_HEAD_BYTES || at > span_len || size > span_len - at) {
            break; /* short, or not in the span: the Python loop's to refuse or skip */
        }
        const unsigned char *p = buf + at;
        long long total = (long long)(int32_t)get_be(p, 4);
        long long magic = (long long)(int32_t)get_be(p + 4, 4);
        long long lies_at = (long long)(int64_t)get_be(p + RECORD_PHYS_POS, 8);
        if (total != size || (magic != RECORD_MAGIC_V1 && magic != RECORD_MAGIC_V2) ||
            lies_at != phys) {
            break;
        }
        PyObject *data;
        if (at == 0 && size == span_len) {
            data = span;
            Py_INCREF(data);
        }
        else {
            data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)size);
            if (data == NULL) {
                return NULL;
            }
        }
        int appended = PyList_Append(records, data);
        Py_DECREF(data);
        if (appended < 0 || PyList_Append(offsets, queue_offset) < 0) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(k);
}
