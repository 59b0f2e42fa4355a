/* protocol/_speedups_records.c: the compiled twins of the record and properties code
 * (protocol/message.py, record_wire.py, record_fields.py; broker/store/index.py's key
 * hash). Part of protocol._speedups: its rules (_speedups.c) hold here. */
#include "_speedups.h"

/* --- split_properties --------------------------------------------------------------- */

/* properties_from_string(text) (Java's string2messageProperties): split on 0x02, split
 * each piece at its first 0x01, keep a pair only when key and value are both non-empty, a
 * later key wins. With ``canonical``, None unless the text is exactly what
 * properties_to_string writes for the pairs it holds: every piece ended by 0x02, each
 * with exactly one 0x01 and a non-empty key and value, no key twice (record_wire's
 * split_canonical). */
static PyObject *
properties_dict(PyObject *text, int canonical)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t start = 0;
    while (start < n) {
        Py_ssize_t split = -1;
        Py_ssize_t splits = 0;
        Py_ssize_t end = start;
        for (; end < n; end++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, end);
            if (c == PROPERTY_SEPARATOR) {
                break;
            }
            if (c == NAME_VALUE_SEPARATOR && splits++ == 0) {
                split = end;
            }
        }
        int kept = split > start && split + 1 < end;
        if (canonical && (end == n || splits != 1 || !kept)) {
            goto not_canonical; /* no last 0x02, a 0x01 missing or twice, an empty side */
        }
        if (kept) {
            PyObject *key = PyUnicode_Substring(text, start, split);
            PyObject *value = key ? PyUnicode_Substring(text, split + 1, end) : NULL;
            Py_ssize_t before = PyDict_GET_SIZE(result);
            if (value == NULL || PyDict_SetItem(result, key, value) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(value);
                Py_DECREF(result);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(value);
            if (canonical && PyDict_GET_SIZE(result) == before) {
                goto not_canonical; /* a key given twice */
            }
        }
        start = end + 1;
    }
    return result;
not_canonical:
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* properties_dict(text, canonical=1): record_wire.split_canonical. */
PyObject *
rmq_split_properties(PyObject *self, PyObject *text)
{
    if (!PyUnicode_CheckExact(text)) {
        Py_RETURN_NONE;
    }
    return properties_dict(text, 1);
}

/* The property names the broker appends (interned at first use: a lookup hashes nothing). */
#define UNIQ_KEY_NAME "UNIQ_KEY"
#define CLUSTER_NAME "CLUSTER"
static PyObject *name_uniq_key = NULL;
static PyObject *name_cluster = NULL;

/* UTF-8 of ``text``, borrowed from the str (NULL and no error when it has none: a lone
 * surrogate, which the Python code's encode() refuses with its own error). */
static const char *
utf8_or_null(PyObject *text, Py_ssize_t *size)
{
    const char *bytes = PyUnicode_AsUTF8AndSize(text, size);
    if (bytes == NULL) {
        PyErr_Clear();
    }
    return bytes;
}

/* The bytes of ``key`` 0x01 value 0x02, for a name literal and a value's UTF-8 size. */
#define PAIR_BYTES(key, value_size) ((Py_ssize_t)sizeof(key) - 1 + 1 + (value_size) + 1)

/* ``key`` 0x01 ``value`` 0x02 written at ``out`` (sized by PAIR_BYTES); past its end. */
static char *
put_pair(char *out, const char *key, size_t key_size, const char *value, Py_ssize_t value_size)
{
    memcpy(out, key, key_size);
    out += key_size;
    *out++ = NAME_VALUE_SEPARATOR;
    memcpy(out, value, (size_t)value_size);
    out += value_size;
    *out++ = PROPERTY_SEPARATOR;
    return out;
}

/* A value with either separator in it: append_property refuses those. */
static int
holds_separator(PyObject *text)
{
    return PyUnicode_FindChar(text, NAME_VALUE_SEPARATOR, 0, PY_SSIZE_T_MAX, 1) != -1 ||
           PyUnicode_FindChar(text, PROPERTY_SEPARATOR, 0, PY_SSIZE_T_MAX, 1) != -1;
}

/* record_wire.record_properties_encoded(text, cluster=, new_uniq_key=): (UTF-8 of the
 * record's properties string, its pairs) with UNIQ_KEY (drawn from ``new_uniq_key()``) and
 * CLUSTER appended when missing; None when ``text`` is not canonical or names another
 * cluster, and None (before any UNIQ_KEY is drawn, but for the drawn key's own check)
 * where the Python code raises or would take another branch: the caller then runs it. */
PyObject *
rmq_record_properties(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "record_properties(text, cluster, new_uniq_key)");
        return NULL;
    }
    PyObject *text = args[0], *cluster = args[1], *new_uniq_key = args[2];
    if (!PyUnicode_CheckExact(text) || !PyUnicode_CheckExact(cluster)) {
        Py_RETURN_NONE;
    }
    if (name_uniq_key == NULL) {
        name_uniq_key = PyUnicode_InternFromString(UNIQ_KEY_NAME);
        if (name_uniq_key == NULL) {
            return NULL;
        }
    }
    if (name_cluster == NULL) {
        name_cluster = PyUnicode_InternFromString(CLUSTER_NAME);
        if (name_cluster == NULL) {
            return NULL;
        }
    }
    PyObject *pairs = properties_dict(text, 1);
    if (pairs == NULL || pairs == Py_None) {
        return pairs;
    }
    PyObject *uniq = NULL;
    PyObject *result = NULL;
    PyObject *stated = PyDict_GetItemWithError(pairs, name_cluster);
    if (stated == NULL && PyErr_Occurred()) {
        goto done;
    }
    if (stated != NULL) {
        int same = PyUnicode_Compare(stated, cluster);
        if (same == -1 && PyErr_Occurred()) {
            goto done;
        }
        if (same != 0) {
            result = Py_None; /* another cluster's name: the dict path */
            Py_INCREF(result);
            goto done;
        }
    }
    int append_cluster = stated == NULL && PyUnicode_GET_LENGTH(cluster) > 0;
    if (append_cluster && holds_separator(cluster)) {
        result = Py_None; /* append_property raises */
        Py_INCREF(result);
        goto done;
    }
    int has_uniq = PyDict_Contains(pairs, name_uniq_key);
    if (has_uniq < 0) {
        goto done;
    }
    if (!has_uniq) {
        uniq = PyObject_CallNoArgs(new_uniq_key);
        if (uniq == NULL) {
            goto done;
        }
        if (!PyUnicode_CheckExact(uniq) ||
            (PyUnicode_GET_LENGTH(uniq) > 0 && holds_separator(uniq))) {
            result = Py_None; /* not a plain key: the Python code words what is wrong */
            Py_INCREF(result);
            goto done;
        }
        if (PyUnicode_GET_LENGTH(uniq) == 0) {
            Py_CLEAR(uniq); /* an empty value appends nothing */
        }
    }
    Py_ssize_t text_size = 0, uniq_size = 0, cluster_size = 0;
    const char *text_utf8 = utf8_or_null(text, &text_size);
    const char *uniq_utf8 = uniq != NULL ? utf8_or_null(uniq, &uniq_size) : "";
    const char *cluster_utf8 = append_cluster ? utf8_or_null(cluster, &cluster_size) : "";
    if (text_utf8 == NULL || uniq_utf8 == NULL || cluster_utf8 == NULL) {
        result = Py_None; /* a lone surrogate: encode() raises in the Python code */
        Py_INCREF(result);
        goto done;
    }
    Py_ssize_t total = text_size;
    if (uniq != NULL) {
        total += PAIR_BYTES(UNIQ_KEY_NAME, uniq_size);
    }
    if (append_cluster) {
        total += PAIR_BYTES(CLUSTER_NAME, cluster_size);
    }
    PyObject *encoded = PyBytes_FromStringAndSize(NULL, total);
    if (encoded == NULL) {
        goto done;
    }
    char *out = PyBytes_AS_STRING(encoded);
    memcpy(out, text_utf8, (size_t)text_size);
    out += text_size;
    if (uniq != NULL) {
        out = put_pair(out, UNIQ_KEY_NAME, sizeof(UNIQ_KEY_NAME) - 1, uniq_utf8, uniq_size);
    }
    if (append_cluster) {
        put_pair(out, CLUSTER_NAME, sizeof(CLUSTER_NAME) - 1, cluster_utf8, cluster_size);
    }
    if ((uniq != NULL && PyDict_SetItem(pairs, name_uniq_key, uniq) < 0) ||
        (append_cluster && PyDict_SetItem(pairs, name_cluster, cluster) < 0)) {
        Py_DECREF(encoded);
        goto done;
    }
    result = PyTuple_Pack(2, encoded, pairs);
    Py_DECREF(encoded);
done:
    Py_XDECREF(uniq);
    Py_DECREF(pairs);
    return result;
}

PyObject *
rmq_parse_properties(PyObject *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "parse_properties(text: str)");
        return NULL;
    }
    return properties_dict(text, 0);
}

/* --- encode_record ------------------------------------------------------------------ */

#define RECORD_FIXED_BYTES 88
#define MAX_TOPIC_LENGTH_V1 127
#define MAX_TOPIC_LENGTH_V2 32767
#define MAX_PROPERTIES_BYTES 32767
#define V6_HOST_FLAGS 0x30 /* SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6 */


/* protocol/message.py encode_record_fields of a record whose properties are bytes and
 * whose hosts are already their 8-byte fields (_host_v4): the same bytes, one allocation.
 * None where that function would raise (IPv6 host flags, an empty or too long topic, too
 * long properties, a number outside its field) or for arguments of other types: the
 * Python code then raises its error. Arguments: topic, body, properties, born host,
 * store host, then queue id, flag, queue offset, physical offset, sys flag, born
 * timestamp, store timestamp, reconsume times, prepared transaction offset. */
PyObject *
rmq_encode_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 14) {
        PyErr_SetString(PyExc_TypeError, "encode_record takes 14 arguments");
        return NULL;
    }
    PyObject *topic = args[0];
    PyObject *body = args[1];
    PyObject *props = args[2];
    PyObject *born_host = args[3];
    PyObject *store_host = args[4];
    if (!PyUnicode_CheckExact(topic) || !PyBytes_CheckExact(body) || !PyBytes_CheckExact(props) ||
        !PyBytes_CheckExact(born_host) || PyBytes_GET_SIZE(born_host) != 8 ||
        !PyBytes_CheckExact(store_host) || PyBytes_GET_SIZE(store_host) != 8) {
        Py_RETURN_NONE;
    }
    int ok = 1;
    long long queue_id = ranged(args[5], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long flag = ranged(args[6], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long queue_offset = ranged(args[7], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long phys = ranged(args[8], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long sys_flag = ranged(args[9], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long born_ts = ranged(args[10], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long store_ts = ranged(args[11], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    long long reconsume = ranged(args[12], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long prepared = ranged(args[13], INT64_MIN_VALUE, INT64_MAX_VALUE, &ok);
    if (!ok || (sys_flag & V6_HOST_FLAGS)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t topic_len;
    const char *topic_utf8 = PyUnicode_AsUTF8AndSize(topic, &topic_len);
    if (topic_utf8 == NULL) {
        PyErr_Clear(); /* a lone surrogate: the Python code raises */
        Py_RETURN_NONE;
    }
    if (topic_len == 0 || topic_len > MAX_TOPIC_LENGTH_V2) {
        Py_RETURN_NONE;
    }
    int v1 = topic_len <= MAX_TOPIC_LENGTH_V1;
    Py_ssize_t props_len = PyBytes_GET_SIZE(props);
    Py_ssize_t body_len = PyBytes_GET_SIZE(body);
    if (props_len > MAX_PROPERTIES_BYTES || body_len > INT32_MAX_VALUE) {
        Py_RETURN_NONE;
    }
    long long total = (long long)RECORD_FIXED_BYTES + body_len + (v1 ? 1 : 2) + topic_len + 2 +
                      props_len;
    if (total > INT32_MAX_VALUE) {
        Py_RETURN_NONE;
    }
    PyObject *crc_value = PyObject_CallOneArg(rmq_crc32, body);
    if (crc_value == NULL) {
        return NULL;
    }
    unsigned long crc = PyLong_AsUnsignedLongMask(crc_value) & 0x7FFFFFFFUL;
    Py_DECREF(crc_value);
    PyObject *record = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (record == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(record);
    out = put_be(out, (unsigned long long)total, 4);
    out = put_be(out, (unsigned long long)(uint32_t)(v1 ? RECORD_MAGIC_V1 : RECORD_MAGIC_V2), 4);
    out = put_be(out, crc, 4);
    out = put_be(out, (unsigned long long)queue_id, 4);
    out = put_be(out, (unsigned long long)flag, 4);
    out = put_be(out, (unsigned long long)queue_offset, 8);
    out = put_be(out, (unsigned long long)phys, 8);
    out = put_be(out, (unsigned long long)sys_flag, 4);
    out = put_be(out, (unsigned long long)born_ts, 8);
    memcpy(out, PyBytes_AS_STRING(born_host), 8);
    out += 8;
    out = put_be(out, (unsigned long long)store_ts, 8);
    memcpy(out, PyBytes_AS_STRING(store_host), 8);
    out += 8;
    out = put_be(out, (unsigned long long)reconsume, 4);
    out = put_be(out, (unsigned long long)prepared, 8);
    out = put_be(out, (unsigned long long)body_len, 4);
    memcpy(out, PyBytes_AS_STRING(body), (size_t)body_len);
    out += body_len;
    out = put_be(out, (unsigned long long)topic_len, v1 ? 1 : 2);
    memcpy(out, topic_utf8, (size_t)topic_len);
    out += topic_len;
    out = put_be(out, (unsigned long long)props_len, 2);
    memcpy(out, PyBytes_AS_STRING(props), (size_t)props_len);
    return record;
}

/* --- read_stored_fields ------------------------------------------------------------- */

#define MIN_RECORD_BYTES (RECORD_FIXED_BYTES + 1 + 2)

/* protocol/record_fields.py read_stored_fields's fast path: the record at ``pos`` of
 * ``buf`` as (total size, topic, queue id, queue offset, physical offset, sys flag,
 * properties dict, store timestamp, body length) when every check passes (sizes, magic,
 * IPv4 hosts, ports, lengths adding up, UTF-8 topic and properties, the body CRC unless
 * ``check_crc`` is false); None otherwise: the caller then decodes it with decode_record,
 * which raises the precise error. */
PyObject *
rmq_read_stored_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "read_stored_fields(buf, pos, check_crc, max_size)");
        return NULL;
    }
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    int check_crc = PyObject_IsTrue(args[2]);
    if (check_crc < 0) {
        return NULL;
    }
    long long max_size = PyLong_AsLongLong(args[3]);
    if (max_size == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear(); /* not a plain buffer: the Python code's business */
        Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    const unsigned char *buf = view.buf;
    Py_ssize_t len = view.len;
    if (pos < 0 || len - pos < RECORD_FIXED_BYTES) {
        goto decline;
    }
    const unsigned char *r = buf + pos;
    int32_t size = (int32_t)get_be(r, 4);
    int32_t magic = (int32_t)get_be(r + 4, 4);
    int32_t stored_crc = (int32_t)get_be(r + 8, 4);
    int32_t queue_id = (int32_t)get_be(r + 12, 4);
    int64_t queue_offset = (int64_t)get_be(r + 20, 8);
    int64_t phys = (int64_t)get_be(r + 28, 8);
    int32_t sys_flag = (int32_t)get_be(r + 36, 4);
    int32_t born_port = (int32_t)get_be(r + 52, 4);
    int64_t store_ts = (int64_t)get_be(r + 56, 8);
    int32_t store_port = (int32_t)get_be(r + 68, 4);
    int32_t body_len = (int32_t)get_be(r + 84, 4);
    if (size < MIN_RECORD_BYTES || (long long)size > max_size || size > len - pos ||
        (sys_flag & V6_HOST_FLAGS) || born_port < 0 || born_port > 0xFFFF || store_port < 0 ||
        store_port > 0xFFFF || body_len < 0) {
        goto decline;
    }
    Py_ssize_t end = pos + size;
    Py_ssize_t body_at = pos + RECORD_FIXED_BYTES;
    if ((Py_ssize_t)body_len > end - body_at) {
        goto decline; /* then no topic length fits either */
    }
    Py_ssize_t p = body_at + body_len;
    Py_ssize_t topic_len;
    if (magic == RECORD_MAGIC_V1 && p + 1 <= end) {
        topic_len = buf[p];
        p += 1;
        if (topic_len <= 0 || topic_len > MAX_TOPIC_LENGTH_V1) {
            goto decline;
        }
    }
    else if (magic == RECORD_MAGIC_V2 && p + 2 <= end) {
        topic_len = (int16_t)get_be(buf + p, 2);
        p += 2;
        if (topic_len <= 0) {
            goto decline;
        }
    }
    else {
        goto decline;
    }
    if (p + topic_len + 2 > end) {
        goto decline;
    }
    Py_ssize_t props_at = p + topic_len + 2;
    Py_ssize_t props_len = (int16_t)get_be(buf + props_at - 2, 2);
    if (props_len < 0 || props_at + props_len != end) {
        goto decline;
    }
    if (check_crc) {
        PyObject *body = PyMemoryView_FromMemory((char *)buf + body_at, body_len, PyBUF_READ);
        if (body == NULL) {
            goto error;
        }
        PyObject *crc_value = PyObject_CallOneArg(rmq_crc32, body);
        Py_DECREF(body);
        if (crc_value == NULL) {
            goto error;
        }
        unsigned long crc = PyLong_AsUnsignedLongMask(crc_value) & 0x7FFFFFFFUL;
        Py_DECREF(crc_value);
        if ((long long)crc != (long long)stored_crc) {
            goto decline;
        }
    }
    PyObject *topic = PyUnicode_DecodeUTF8((const char *)buf + p, topic_len, NULL);
    if (topic == NULL) {
        PyErr_Clear();
        goto decline;
    }
    PyObject *props;
    if (props_len) {
        PyObject *text = PyUnicode_DecodeUTF8((const char *)buf + props_at, props_len, NULL);
        if (text == NULL) {
            PyErr_Clear();
            Py_DECREF(topic);
            goto decline;
        }
        props = properties_dict(text, 0);
        Py_DECREF(text);
    }
    else {
        props = PyDict_New();
    }
    if (props == NULL) {
        Py_DECREF(topic);
        goto error;
    }
    result = Py_BuildValue("(iNiLLiNLi)", size, topic, queue_id, (long long)queue_offset,
                           (long long)phys, sys_flag, props, (long long)store_ts, body_len);
    PyBuffer_Release(&view);
    return result;
decline:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
error:
    PyBuffer_Release(&view);
    return NULL;
}

/* --- topic_key_hash ----------------------------------------------------------------- */

static uint32_t
java_hash_add(uint32_t h, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c > 0xFFFF) { /* Java hashes UTF-16 code units: a surrogate pair */
            Py_UCS4 v = c - 0x10000;
            h = 31 * h + (0xD800 | (v >> 10));
            h = 31 * h + (0xDC00 | (v & 0x3FF));
        }
        else {
            h = 31 * h + c;
        }
    }
    return h;
}

/* RocketMQ's index key hash of "topic#key": abs of Java's String.hashCode (UTF-16 code
 * units, int32 arithmetic), 0 when that is Integer.MIN_VALUE (broker/store/index.py). */
PyObject *
rmq_topic_key_hash(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "topic_key_hash(topic: str, key: str)");
        return NULL;
    }
    uint32_t h = java_hash_add(0, args[0]);
    h = 31 * h + '#';
    h = java_hash_add(h, args[1]);
    if (h & 0x80000000u) {
        h = 0x100000000ull - h;
        if (h == 0x80000000u) {
            h = 0;
        }
    }
    return PyLong_FromUnsignedLong(h);
}
