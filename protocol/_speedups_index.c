/* protocol/_speedups_index.c: ``IndexFile.put`` (broker/store/index.py) in one call.
 *
 * ``index_put(f, key_hash, physical_offset, store_ms)`` appends one entry to the
 * memory-mapped IndexFile ``f``, links it into its bucket and writes the header, then sets
 * the attributes ``put`` sets: the same bytes and the same attribute values. It answers
 * None, having changed nothing, for anything the common case is not (an attribute that is
 * no int in range, a full file, a map too small, a value a field cannot hold): the Python
 * ``put`` then runs and raises what it raises. Layout (reference/rocketmq-wire.md §3.8):
 * 40-byte header (beginTimestamp, endTimestamp, beginPhyOffset, endPhyOffset int64;
 * hashSlotCount, indexCount int32), int32 slots, 20-byte entries (keyHash int32,
 * phyOffset int64, timeDiff int32, prevIndex int32), all big-endian. */

#include "_speedups.h"

#define INDEX_HEADER_BYTES 40
#define INDEX_SLOT_BYTES 4
#define INDEX_ENTRY_BYTES 20

static PyObject *s_mm, *s_slots, *s_entries, *s_entries_pos, *s_index_count;
static PyObject *s_hash_slot_count, *s_begin_ts, *s_begin_phy, *s_end_ts, *s_end_phy;

static int
intern_names(void)
{
    if (s_mm != NULL) {
        return 0;
    }
    struct {
        PyObject **slot;
        const char *name;
    } names[] = {
        {&s_mm, "_mm"},
        {&s_slots, "slots"},
        {&s_entries, "entries"},
        {&s_entries_pos, "_entries_pos"},
        {&s_index_count, "index_count"},
        {&s_hash_slot_count, "hash_slot_count"},
        {&s_begin_ts, "begin_timestamp_ms"},
        {&s_begin_phy, "begin_phy_offset"},
        {&s_end_ts, "end_timestamp_ms"},
        {&s_end_phy, "end_phy_offset"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PyObject *name = PyUnicode_InternFromString(names[i].name);
        if (name == NULL) {
            return -1;
        }
        *names[i].slot = name;
    }
    return 0;
}

/* f.<name> as a C number within [low, high]; *ok = 0 otherwise (no error left set). */
static long long
ranged_attr(PyObject *f, PyObject *name, long long low, long long high, int *ok)
{
    PyObject *value = PyObject_GetAttr(f, name);
    if (value == NULL) {
        PyErr_Clear();
        *ok = 0;
        return 0;
    }
    long long number = ranged(value, low, high, ok);
    Py_DECREF(value);
    return number;
}

/* Set f.<name> = number; -1 with an error set on failure. */
static int
set_number(PyObject *f, PyObject *name, long long number)
{
    PyObject *value = PyLong_FromLongLong(number);
    if (value == NULL) {
        return -1;
    }
    int status = PyObject_SetAttr(f, name, value);
    Py_DECREF(value);
    return status;
}

PyObject *
rmq_index_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "index_put takes 4 arguments");
        return NULL;
    }
    if (intern_names() < 0) {
        return NULL;
    }
    PyObject *f = args[0];
    int ok = 1;
    long long key_hash = ranged(args[1], 0, INT32_MAX_VALUE, &ok);
    long long phys = ranged(args[2], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long store_ms = ranged(args[3], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long slots = ranged_attr(f, s_slots, 1, INT32_MAX_VALUE, &ok);
    long long entries = ranged_attr(f, s_entries, 1, INT32_MAX_VALUE, &ok);
    /* Below 2**48: entries_pos + count * 20 cannot overflow. */
    long long entries_pos = ranged_attr(f, s_entries_pos, 0, 1LL << 48, &ok);
    long long count = ranged_attr(f, s_index_count, INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long slot_count =
        ranged_attr(f, s_hash_slot_count, INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long begin_ms = ranged_attr(f, s_begin_ts, INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long begin_phy = ranged_attr(f, s_begin_phy, INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    /* count < entries (the caller's check), and count + 1 still an int32. */
    if (!ok || count >= entries || count >= INT32_MAX_VALUE) {
        Py_RETURN_NONE;
    }
    int new_slot = 0;
    PyObject *mm = PyObject_GetAttr(f, s_mm);
    if (mm == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(mm, &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        Py_DECREF(mm);
        Py_RETURN_NONE;
    }
    Py_DECREF(mm); /* f keeps the map alive; the view holds its export */
    unsigned char *base = (unsigned char *)view.buf;
    long long slot_pos = INDEX_HEADER_BYTES + (key_hash % slots) * INDEX_SLOT_BYTES;
    /* count >= 0 here only if the file is sane; a negative count is Python's to refuse. */
    long long entry_pos = entries_pos + count * INDEX_ENTRY_BYTES;
    if (count < 0 || view.len < INDEX_HEADER_BYTES || slot_pos + INDEX_SLOT_BYTES > view.len ||
        entry_pos < 0 || entry_pos + INDEX_ENTRY_BYTES > view.len) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    long long prev = (int32_t)get_be(base + slot_pos, 4);
    if (prev <= 0 || prev > count) {
        prev = 0;
        slot_count += 1;
        new_slot = 1;
        if (slot_count > INT32_MAX_VALUE) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
    }
    if (count <= 1) {
        begin_phy = phys;
        begin_ms = store_ms;
    }
    long long diff = 0;
    if (begin_ms > 0 && store_ms > begin_ms) { /* store_ms - begin_ms cannot overflow */
        diff = (store_ms - begin_ms) / 1000;
        if (diff > INT32_MAX_VALUE) {
            diff = INT32_MAX_VALUE;
        }
    }
    unsigned char *out = base + entry_pos;
    out = put_be(out, (unsigned long long)key_hash, 4);
    out = put_be(out, (unsigned long long)phys, 8);
    out = put_be(out, (unsigned long long)diff, 4);
    put_be(out, (unsigned long long)prev, 4);
    put_be(base + slot_pos, (unsigned long long)count, 4);
    count += 1;
    out = base;
    out = put_be(out, (unsigned long long)begin_ms, 8);
    out = put_be(out, (unsigned long long)store_ms, 8);
    out = put_be(out, (unsigned long long)begin_phy, 8);
    out = put_be(out, (unsigned long long)phys, 8);
    out = put_be(out, (unsigned long long)slot_count, 4);
    put_be(out, (unsigned long long)count, 4);
    PyBuffer_Release(&view);
    if ((new_slot && set_number(f, s_hash_slot_count, slot_count) < 0) ||
        (count <= 2 && (set_number(f, s_begin_phy, begin_phy) < 0 ||
                        set_number(f, s_begin_ts, begin_ms) < 0)) ||
        set_number(f, s_index_count, count) < 0 || set_number(f, s_end_phy, phys) < 0 ||
        set_number(f, s_end_ts, store_ms) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}
