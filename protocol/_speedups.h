/* protocol/_speedups.h: what the C files of protocol._speedups share (see
 * _speedups.c for what the module is and its rules). */
#ifndef RMQ_SPEEDUPS_H
#define RMQ_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define PROPERTY_SEPARATOR 0x02
#define NAME_VALUE_SEPARATOR 0x01
#define HEADER_LEN_MASK 0xFFFFFF
/* A record's magic (protocol/message.py MAGIC_V1 / MAGIC_V2: 1- and 2-byte topic length),
 * as the signed int32 it is on disk. */
#define RECORD_MAGIC_V1 (-626843481)
#define RECORD_MAGIC_V2 (-626843477)
#define INT32_MAX_VALUE 0x7FFFFFFFLL
#define INT32_MIN_VALUE (-0x7FFFFFFFLL - 1)
#define INT64_MAX_VALUE 0x7FFFFFFFFFFFFFFFLL
#define INT64_MIN_VALUE (-0x7FFFFFFFFFFFFFFFLL - 1)
#include <stdint.h>

/* --- helpers ------------------------------------------------------------------------ */

/* ``object.__new__(type)`` with slot i set to values[i] through descrs[i] (each a slot's
 * member descriptor, as the Python code's generated ``make`` and ``_new_command`` set
 * them; a frozen attrs class refuses plain attribute stores). New reference, or NULL. */
static inline PyObject *
new_with_slots(PyTypeObject *type, PyObject *const *descrs, PyObject *const *values,
               Py_ssize_t count)
{
    PyObject *obj = type->tp_alloc(type, 0);
    if (obj == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        descrsetfunc set = Py_TYPE(descrs[i])->tp_descr_set;
        if (set == NULL) {
            PyErr_SetString(PyExc_TypeError, "a slot's member descriptor is needed");
            Py_DECREF(obj);
            return NULL;
        }
        if (set(descrs[i], obj, values[i]) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    return obj;
}

/* An int argument as a C number within [low, high]; anything else (another type, out of
 * range) sets *ok to 0 and leaves no error: the caller answers None. */
static inline long long
ranged(PyObject *value, long long low, long long high, int *ok)
{
    if (!PyLong_Check(value)) {
        *ok = 0;
        return 0;
    }
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (number == -1 && PyErr_Occurred()) || number < low || number > high) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    return number;
}

static inline unsigned char *
put_be(unsigned char *out, unsigned long long value, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xFF);
        value >>= 8;
    }
    return out + bytes;
}

static inline uint64_t
get_be(const unsigned char *p, int bytes)
{
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++) {
        value = (value << 8) | p[i];
    }
    return value;
}

/* protocol.crc.crc32 (zlib's values), imported at module init (_speedups.c). */
extern PyObject *rmq_crc32;

/* _speedups_records.c: properties, stored records, index keys. */
PyObject *rmq_split_properties(PyObject *self, PyObject *text);
PyObject *rmq_parse_properties(PyObject *self, PyObject *text);
PyObject *rmq_record_properties(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *rmq_encode_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *rmq_read_stored_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *rmq_topic_key_hash(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* _speedups_index.c: an IndexFile entry. */
PyObject *rmq_index_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* _speedups_cq.c: a pull's walk over ConsumeQueue entries. */
PyObject *rmq_take_all(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *rmq_cut_records(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* _speedups_pull.c: the consumer's pull-body walk. */
PyObject *rmq_quick_messages(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

#endif
