/* protocol/_speedups_pull.c: the compiled twin of the consumer's pull-body walk
 * (client/consumer/core.py decode_pull_body's loop over records whose ``quick_message``
 * takes them, client/consumer/records.py, and client/message.py received_message). Part
 * of protocol._speedups: its rules (_speedups.c) hold here.
 *
 *   quick_messages(buf, pos, out, last, next_begin_offset, ctx) -> (pos, last)
 *
 * From ``pos`` on, each record that decode_pull_body would hand to quick_message, that
 * quick_message would take, and that belongs to the pulled queue itself (its topic and
 * queue id) becomes a ReceivedMessage appended to ``out``, exactly as the Python code
 * builds it; ``last`` moves as the walk's does (to a sane queue offset). It stops at the
 * end of ``buf`` or at the first record it does not take, and answers where it stopped:
 * the Python loop then judges that record (framing, the full decoder, another topic) and
 * calls again after it. The subscription must take every record (the caller checks).
 *
 * ctx: (slots, queue, topic, topic_bytes, queue_id, names, key_separator) where slots is
 * (ReceivedMessage, its 17 slot descriptors in field order) and names the properties
 * (RECONSUME_TIME, KEYS, TAGS, UNIQ_KEY).
 */
#include "_speedups.h"

#define PULL_FIXED_BYTES 88
#define PULL_MIN_RECORD_BYTES (PULL_FIXED_BYTES + 1 + 2)
#define PULL_MAX_TOPIC_V1 127
#define PULL_INT16_MAX 0x7FFF
/* SYSFLAG_COMPRESSED | SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6: the full path's. */
#define PULL_UNUSUAL_FLAGS (0x1 | 0x10 | 0x20)
#define RECEIVED_FIELDS 17

/* A cached (host text, port) tuple for one packed IPv4 address and port. */
typedef struct {
    uint64_t key; /* ip << 32 | port; UINT64_MAX: empty */
    PyObject *host;
} host_cache;

static PyObject *
cached_host(host_cache *cache, const unsigned char *ip, uint32_t port)
{
    uint64_t key = (get_be(ip, 4) << 32) | port;
    if (cache->host != NULL && cache->key == key) {
        Py_INCREF(cache->host);
        return cache->host;
    }
    PyObject *host = Py_BuildValue("(Nk)",
                                   PyUnicode_FromFormat("%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]),
                                   (unsigned long)port);
    if (host == NULL) {
        return NULL;
    }
    Py_XSETREF(cache->host, host);
    cache->key = key;
    Py_INCREF(host);
    return host;
}

/* The value of ``name`` in ``props`` (borrowed) or NULL; -1 on an error. */
static int
prop(PyObject *props, PyObject *name, PyObject **value)
{
    *value = PyDict_GetItemWithError(props, name);
    return (*value == NULL && PyErr_Occurred()) ? -1 : 0;
}

/* received_message's reconsume rule: max(record's, the property's) when the property is
 * 1 to 9 ASCII digits (an int32), else the record's. 0 done, -1 error. */
static int
reconsume_times(PyObject *value, PyObject **times)
{
    if (value == NULL || !PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(value);
    if (n < 1 || n > 9) {
        return 0;
    }
    long number = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (chars[i] < '0' || chars[i] > '9') {
            return 0;
        }
        number = number * 10 + (chars[i] - '0');
    }
    if (number > PyLong_AsLong(*times)) {
        PyObject *bigger = PyLong_FromLong(number);
        if (bigger == NULL) {
            return -1;
        }
        Py_SETREF(*times, bigger);
    }
    return 0;
}

/* tuple(k for k in keys.split(sep) if k) if keys else (). */
static PyObject *
split_keys(PyObject *keys, PyObject *sep)
{
    if (keys == NULL || PyUnicode_GET_LENGTH(keys) == 0) {
        return PyTuple_New(0);
    }
    PyObject *parts = PyUnicode_Split(keys, sep, -1);
    if (parts == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(parts), kept = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        kept += PyUnicode_GET_LENGTH(PyList_GET_ITEM(parts, i)) > 0;
    }
    PyObject *out = PyTuple_New(kept);
    if (out != NULL) {
        for (Py_ssize_t i = 0, j = 0; i < n; i++) {
            PyObject *part = PyList_GET_ITEM(parts, i);
            if (PyUnicode_GET_LENGTH(part) > 0) {
                Py_INCREF(part);
                PyTuple_SET_ITEM(out, j++, part);
            }
        }
    }
    Py_DECREF(parts);
    return out;
}

typedef struct {
    PyTypeObject *type;
    PyObject *const *descrs;
    PyObject *queue, *topic, *topic_bytes, *names, *sep;
    long queue_id;
    host_cache born, store;
} walk_ctx;

/* The message of the record at ``r`` (``size`` bytes, framing checked) into *message; 0
 * when quick_message (or this twin's narrower rule) declines it, -1 on an error. */
static int
quick_one(walk_ctx *ctx, const unsigned char *r, Py_ssize_t size, PyObject **message)
{
    int32_t magic = (int32_t)get_be(r + 4, 4);
    int32_t stored_crc = (int32_t)get_be(r + 8, 4);
    int32_t queue_id = (int32_t)get_be(r + 12, 4);
    int32_t flag = (int32_t)get_be(r + 16, 4);
    int64_t queue_offset = (int64_t)get_be(r + 20, 8);
    int64_t commit_offset = (int64_t)get_be(r + 28, 8);
    int32_t sys_flag = (int32_t)get_be(r + 36, 4);
    int64_t born_ts = (int64_t)get_be(r + 40, 8);
    int32_t born_port = (int32_t)get_be(r + 52, 4);
    int64_t store_ts = (int64_t)get_be(r + 56, 8);
    int32_t store_port = (int32_t)get_be(r + 68, 4);
    int32_t reconsume = (int32_t)get_be(r + 72, 4);
    int32_t body_len = (int32_t)get_be(r + 84, 4);
    if ((sys_flag & PULL_UNUSUAL_FLAGS) || commit_offset < 0 || body_len < 0 || born_port < 0 ||
        born_port > 0xFFFF || store_port < 0 || store_port > 0xFFFF || queue_id != ctx->queue_id) {
        return 0;
    }
    Py_ssize_t p = PULL_FIXED_BYTES + (Py_ssize_t)body_len;
    if (p + 3 > size) {
        return 0;
    }
    Py_ssize_t topic_len;
    if (magic == RECORD_MAGIC_V1) {
        topic_len = r[p];
        p += 1;
        if (topic_len > PULL_MAX_TOPIC_V1) {
            return 0;
        }
    }
    else { /* RECORD_MAGIC_V2: the caller let no other through */
        topic_len = ((Py_ssize_t)r[p] << 8) | r[p + 1];
        p += 2;
    }
    if (topic_len <= 0 || topic_len > PULL_INT16_MAX || p + topic_len + 2 > size) {
        return 0;
    }
    if (topic_len != PyBytes_GET_SIZE(ctx->topic_bytes) ||
        memcmp(r + p, PyBytes_AS_STRING(ctx->topic_bytes), topic_len) != 0) {
        return 0; /* another topic: the Python code builds its queue */
    }
    p += topic_len;
    Py_ssize_t props_len = ((Py_ssize_t)r[p] << 8) | r[p + 1];
    p += 2;
    if (props_len > PULL_INT16_MAX || p + props_len != size) {
        return 0;
    }
    PyObject *values[RECEIVED_FIELDS] = {NULL};
    PyObject *props = NULL, *offset_id = NULL, *times = NULL, *crc_value = NULL;
    int outcome = -1;
    PyObject *body = PyBytes_FromStringAndSize((const char *)r + PULL_FIXED_BYTES, body_len);
    if (body == NULL) {
        goto done;
    }
    crc_value = PyObject_CallOneArg(rmq_crc32, body);
    if (crc_value == NULL) {
        goto done;
    }
    if ((long long)(PyLong_AsUnsignedLongMask(crc_value) & 0x7FFFFFFFUL) != (long long)stored_crc) {
        outcome = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (props_len) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)r + p, props_len, NULL);
        if (text == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                goto done;
            }
            PyErr_Clear();
            outcome = 0;
            goto done;
        }
        props = rmq_parse_properties(NULL, text);
        Py_DECREF(text);
    }
    else {
        props = PyDict_New();
    }
    if (props == NULL) {
        goto done;
    }
    PyObject *reconsume_value, *keys, *tags, *uniq;
    PyObject *const *names = &PyTuple_GET_ITEM(ctx->names, 0);
    if (prop(props, names[0], &reconsume_value) < 0 || prop(props, names[1], &keys) < 0 ||
        prop(props, names[2], &tags) < 0 || prop(props, names[3], &uniq) < 0) {
        goto done;
    }
    times = PyLong_FromLong(reconsume);
    if (times == NULL) {
        goto done;
    }
    if (reconsume_times(reconsume_value, &times) < 0) {
        goto done;
    }
    char id[33];
    snprintf(id, sizeof id, "%02X%02X%02X%02X%08X%016llX", r[64], r[65], r[66], r[67],
             (unsigned)store_port, (unsigned long long)commit_offset);
    offset_id = PyUnicode_FromStringAndSize(id, 32);
    if (offset_id == NULL) {
        goto done;
    }
    /* Field order: topic, body, tags, keys, properties, msg_id, offset_msg_id, queue,
     * queue_offset, commit_log_offset, born/store timestamps, born/store hosts,
     * reconsume_times, sys_flag, flag. */
    Py_INCREF(ctx->topic);
    values[0] = ctx->topic;
    values[1] = body;
    body = NULL;
    values[2] = tags != NULL ? tags : Py_None;
    Py_INCREF(values[2]);
    values[3] = split_keys(keys, ctx->sep);
    values[4] = props;
    props = NULL;
    values[5] = (uniq != NULL && PyUnicode_GET_LENGTH(uniq) > 0) ? uniq : offset_id;
    Py_INCREF(values[5]);
    values[6] = offset_id;
    offset_id = NULL;
    Py_INCREF(ctx->queue);
    values[7] = ctx->queue;
    values[8] = PyLong_FromLongLong(queue_offset);
    values[9] = PyLong_FromLongLong(commit_offset);
    values[10] = PyLong_FromLongLong(born_ts);
    values[11] = PyLong_FromLongLong(store_ts);
    values[12] = cached_host(&ctx->born, r + 48, (uint32_t)born_port);
    values[13] = cached_host(&ctx->store, r + 64, (uint32_t)store_port);
    values[14] = times;
    times = NULL;
    values[15] = PyLong_FromLong(sys_flag);
    values[16] = PyLong_FromLong(flag);
    for (int i = 0; i < RECEIVED_FIELDS; i++) {
        if (values[i] == NULL) {
            goto done;
        }
    }
    *message = new_with_slots(ctx->type, ctx->descrs, values, RECEIVED_FIELDS);
    outcome = *message != NULL ? 1 : -1;
done:
    for (int i = 0; i < RECEIVED_FIELDS; i++) {
        Py_XDECREF(values[i]);
    }
    Py_XDECREF(body);
    Py_XDECREF(crc_value);
    Py_XDECREF(props);
    Py_XDECREF(offset_id);
    Py_XDECREF(times);
    return outcome;
}

PyObject *
rmq_quick_messages(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_CheckExact(args[0]) || !PyList_CheckExact(args[2]) ||
        !PyTuple_CheckExact(args[5]) || PyTuple_GET_SIZE(args[5]) != 7) {
        PyErr_SetString(PyExc_TypeError,
                        "quick_messages(buf: bytes, pos, out: list, last, next_begin_offset, ctx)");
        return NULL;
    }
    PyObject *const *c = &PyTuple_GET_ITEM(args[5], 0);
    PyObject *slots = c[0];
    if (!PyTuple_CheckExact(slots) || PyTuple_GET_SIZE(slots) != RECEIVED_FIELDS + 1 ||
        !PyType_Check(PyTuple_GET_ITEM(slots, 0)) || !PyUnicode_CheckExact(c[2]) ||
        !PyBytes_CheckExact(c[3]) || !PyLong_Check(c[4]) || !PyTuple_CheckExact(c[5]) ||
        PyTuple_GET_SIZE(c[5]) != 4 || !PyUnicode_CheckExact(c[6])) {
        PyErr_SetString(PyExc_TypeError, "quick_messages: a bad ctx");
        return NULL;
    }
    for (int i = 0; i < 4; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(c[5], i))) {
            PyErr_SetString(PyExc_TypeError, "quick_messages: property names must be str");
            return NULL;
        }
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long last = PyLong_AsLongLong(args[3]);
    if (last == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long long next_begin = PyLong_AsLongLong(args[4]);
    if (next_begin == -1 && PyErr_Occurred()) {
        return NULL;
    }
    long queue_id = PyLong_AsLong(c[4]);
    if (queue_id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    walk_ctx ctx = {
        .type = (PyTypeObject *)PyTuple_GET_ITEM(slots, 0),
        .descrs = &PyTuple_GET_ITEM(slots, 1),
        .queue = c[1],
        .topic = c[2],
        .topic_bytes = c[3],
        .names = c[5],
        .sep = c[6],
        .queue_id = queue_id,
        .born = {0, NULL},
        .store = {0, NULL},
    };
    const unsigned char *buf = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t end = PyBytes_GET_SIZE(args[0]);
    int failed = 0;
    while (pos >= 0 && end - pos >= PULL_MIN_RECORD_BYTES) {
        const unsigned char *r = buf + pos;
        int32_t size = (int32_t)get_be(r, 4);
        int32_t magic = (int32_t)get_be(r + 4, 4);
        if ((magic != RECORD_MAGIC_V1 && magic != RECORD_MAGIC_V2) ||
            size < PULL_MIN_RECORD_BYTES || size > end - pos) {
            break; /* the framing: the Python code judges it */
        }
        PyObject *message = NULL;
        int taken = quick_one(&ctx, r, size, &message);
        if (taken < 0) {
            failed = 1;
            break;
        }
        if (taken == 0) {
            break;
        }
        int appended = PyList_Append(args[2], message);
        Py_DECREF(message);
        if (appended < 0) {
            failed = 1;
            break;
        }
        int64_t queue_offset = (int64_t)get_be(r + 20, 8);
        if (last < queue_offset && queue_offset < next_begin) {
            last = queue_offset;
        }
        pos += size;
    }
    Py_XDECREF(ctx.born.host);
    Py_XDECREF(ctx.store.host);
    if (failed) {
        return NULL;
    }
    return Py_BuildValue("(nL)", pos, last);
}
