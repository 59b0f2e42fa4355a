/* protocol._speedups: the compiled fast paths of the codec (issue 14, item 6).
 *
 * This file: the remoting codec (frames, commands, headers) and the module itself;
 * _speedups_records.c: properties, stored records and index keys; _speedups_pull.c: the
 * consumer's pull-body walk; _speedups.h: what they share.
 *
 * Each function does the common, canonical case of one pure-Python function and answers
 * None for anything else; the caller then runs the Python code, which stays the
 * definition (errors and their wording included). tests/unit/test_speedups.py holds each
 * one equal to its Python twin on generated input, and RMQ_PURE_PYTHON=1 turns them all
 * off (protocol/speedups.py).
 *
 *   split_properties(text)            properties_from_string(text) when text is canonical
 *   parse_properties(text)            properties_from_string(text), any text
 *   parse_header(cls, spec, required, ext)
 *                                     a generated header parse (protocol/headers.py)
 *   command_from_json(slots, header, body, java, other)
 *                                     RemotingCommand.from_frame's common case
 *   cut_frames(slots, data, max_frame) FrameDecoder.feed's complete, valid frames
 *   encode_record(topic, body, props, born_host8, store_host8, ...)
 *                                     encode_record_fields of a record with bytes properties
 *   read_stored_fields(buf, pos, check_crc, max_size)
 *                                     record_fields.read_stored_fields's fast path
 *   topic_key_hash(topic, key)        the index hash of "topic#key" (broker/store/index.py)
 *   quick_messages(buf, pos, out, last, next_begin_offset, ctx)
 *                                     decode_pull_body's loop over the records
 *                                     quick_message takes (client/consumer/core.py)
 *   build_slots(slots, *values)       slot_builder's make (protocol/slots.py)
 *   record_properties(text, cluster, new_uniq_key)
 *                                     record_wire.record_properties_encoded
 *   java_frame(code, ext, flag, opaque, version, body)
 *                                     RemotingCommand.encode() of a JAVA command with no
 *                                     remark: the frame, JSON header (json.dumps's bytes)
 *
 * Rules: no input makes these read or write outside a buffer they sized; every length is
 * checked before it is used; a reference is owned or borrowed as the CPython API says, and
 * every error path releases what it holds.
 */
#include "_speedups.h"

PyObject *rmq_crc32 = NULL; /* protocol.crc.crc32, imported at module init */

/* --- parse_header ------------------------------------------------------------------- */

enum { KIND_STR = 0, KIND_INT = 1, KIND_BOOL = 2 };

/* The int of ``value`` when it is 1..max_digits ASCII digits (the generated parse's fast
 * branch; max_digits keeps it inside the field's Java type), else NULL with no error. */
static PyObject *
digits_to_int(PyObject *value, long max_digits)
{
    if (!PyUnicode_IS_ASCII(value)) {
        return NULL;
    }
    Py_ssize_t len = PyUnicode_GET_LENGTH(value);
    if (len < 1 || len > max_digits || max_digits > 18) {
        return NULL;
    }
    const Py_UCS1 *chars = PyUnicode_1BYTE_DATA(value);
    long long number = 0;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (chars[i] < '0' || chars[i] > '9') {
            return NULL;
        }
        number = number * 10 + (chars[i] - '0'); /* <= 18 digits: no overflow */
    }
    return PyLong_FromLongLong(number);
}

/* A header built from ``ext`` as the class's generated parse builds it, when every field
 * takes the parse's plain branch: present str fields, ints of plain ASCII digits that fit,
 * the exact spellings "true" / "false", defaults for missing optional fields. Anything
 * else (a missing required field, a value the Python parse would convert or refuse, an
 * ext that is not a dict): None.
 *
 * ``spec`` is a tuple of (wire name, kind, max digits, default, slot descriptor) per
 * field of ``cls``, every field once (protocol/headers.py builds it); ``required`` is the
 * default of a required field. */
static PyObject *
parse_header(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_header(cls, spec, required, ext)");
        return NULL;
    }
    PyObject *cls = args[0];
    PyObject *spec = args[1];
    PyObject *required = args[2];
    PyObject *ext = args[3];
    if (!PyType_Check(cls) || !PyTuple_CheckExact(spec)) {
        PyErr_SetString(PyExc_TypeError, "parse_header: cls must be a type, spec a tuple");
        return NULL;
    }
    if (!PyDict_CheckExact(ext)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t count = PyTuple_GET_SIZE(spec);
    PyObject *values[64] = {NULL};
    PyObject *descrs[64] = {NULL}; /* the slots' descriptors, borrowed from ``spec`` */
    if (count > 64) {
        Py_RETURN_NONE;
    }
    Py_ssize_t made = 0;
    for (; made < count; made++) {
        PyObject *field = PyTuple_GET_ITEM(spec, made);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 5) {
            PyErr_SetString(PyExc_TypeError, "parse_header: each field spec is a 5-tuple");
            goto error;
        }
        descrs[made] = PyTuple_GET_ITEM(field, 4);
        PyObject *raw = PyDict_GetItemWithError(ext, PyTuple_GET_ITEM(field, 0));
        if (raw == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            PyObject *fallback = PyTuple_GET_ITEM(field, 3);
            if (fallback == required) {
                goto not_plain;
            }
            Py_INCREF(fallback);
            values[made] = fallback;
            continue;
        }
        if (!PyUnicode_CheckExact(raw)) {
            goto not_plain;
        }
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(field, 1));
        if (kind == -1 && PyErr_Occurred()) {
            goto error;
        }
        PyObject *value;
        if (kind == KIND_STR) {
            Py_INCREF(raw);
            value = raw;
        }
        else if (kind == KIND_INT) {
            long max_digits = PyLong_AsLong(PyTuple_GET_ITEM(field, 2));
            if (max_digits == -1 && PyErr_Occurred()) {
                goto error;
            }
            value = digits_to_int(raw, max_digits);
            if (value == NULL) {
                if (PyErr_Occurred()) {
                    goto error;
                }
                goto not_plain;
            }
        }
        else if (kind == KIND_BOOL) {
            if (PyUnicode_CompareWithASCIIString(raw, "true") == 0) {
                value = Py_True;
            }
            else if (PyUnicode_CompareWithASCIIString(raw, "false") == 0) {
                value = Py_False;
            }
            else {
                goto not_plain;
            }
            Py_INCREF(value);
        }
        else {
            PyErr_SetString(PyExc_ValueError, "parse_header: unknown field kind");
            goto error;
        }
        values[made] = value;
    }
    PyObject *header = new_with_slots((PyTypeObject *)cls, descrs, values, count);
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_DECREF(values[i]);
    }
    return header;
not_plain:
    for (Py_ssize_t i = 0; i < made; i++) {
        Py_DECREF(values[i]);
    }
    Py_RETURN_NONE;
error:
    for (Py_ssize_t i = 0; i < made; i++) {
        Py_DECREF(values[i]);
    }
    return NULL;
}

/* --- command_from_json -------------------------------------------------------------- */

/* The header's keys, made once (PyInit__speedups) and interned: a lookup with one hashes
 * nothing (PyDict_GetItemString made and hashed a new str per lookup: ~5k instructions
 * of a SEND_MESSAGE_V2's decode). */
enum { KEY_CODE, KEY_VERSION, KEY_OPAQUE, KEY_FLAG, KEY_EXT_FIELDS, KEY_LANGUAGE, KEY_REMARK,
       KEY_COUNT };
static const char *const HEADER_KEY_NAMES[KEY_COUNT] = {
    "code", "version", "opaque", "flag", "extFields", "language", "remark"};
static PyObject *header_keys[KEY_COUNT];

/* ``header[key]``, borrowed, or NULL when missing (errors swallowed, as
 * PyDict_GetItemString did: the header's keys are str, which compare without error). */
static PyObject *
header_get(PyObject *header, int key)
{
    return PyDict_GetItem(header, header_keys[key]);
}

/* ``header[key]`` as a C number when it is an exact int in the int32 range; missing: 0
 * (the Python decoder's default). Returns 1 on success, 0 when the field is not plain,
 * -1 on an error. */
static int
int32_field(PyObject *header, int key, int required, PyObject **out)
{
    PyObject *value = header_get(header, key);
    if (value == NULL) {
        if (required) {
            return 0;
        }
        *out = NULL;
        return 1;
    }
    if (!PyLong_CheckExact(value)) {
        return 0;
    }
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || number > INT32_MAX_VALUE || number < -INT32_MAX_VALUE - 1) {
        return 0;
    }
    *out = value;
    return 1;
}

/* The command the Python decoder's common case builds from a parsed JSON header (what
 * every client sends): ``header`` a dict, ``extFields`` a dict of str values, ``code`` an
 * int and ``version`` / ``opaque`` / ``flag`` ints or missing, each in the int32 range;
 * ``language`` a str (else "OTHER"; missing: "JAVA"), ``remark`` a str (else None). The
 * command takes the parsed ext dict as it is (it is fresh). None for anything else: the
 * Python decoder's general path then checks it and words the error.
 *
 * ``slots`` is (RemotingCommand, then the slot descriptors of code, language, version,
 * opaque, flag, remark, ext_fields, body) (protocol/command.py builds it). */
static PyObject *
command_from_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "command_from_json(slots, header, body, java, other)");
        return NULL;
    }
    PyObject *slots = args[0];
    PyObject *header = args[1];
    PyObject *body = args[2];
    if (!PyTuple_CheckExact(slots) || PyTuple_GET_SIZE(slots) != 9 ||
        !PyType_Check(PyTuple_GET_ITEM(slots, 0))) {
        PyErr_SetString(PyExc_TypeError, "command_from_json: slots is (cls, 8 descriptors)");
        return NULL;
    }
    if (!PyDict_CheckExact(header)) {
        Py_RETURN_NONE;
    }
    PyObject *ext = header_get(header, KEY_EXT_FIELDS);
    if (ext == NULL || !PyDict_CheckExact(ext)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t pos = 0;
    PyObject *key;
    PyObject *value;
    while (PyDict_Next(ext, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(value)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *numbers[4]; /* code, version, opaque, flag: borrowed, NULL when missing */
    static const int keys[4] = {KEY_CODE, KEY_VERSION, KEY_OPAQUE, KEY_FLAG};
    for (int i = 0; i < 4; i++) {
        int plain = int32_field(header, keys[i], i == 0, &numbers[i]);
        if (plain < 0) {
            return NULL;
        }
        if (plain == 0) {
            Py_RETURN_NONE;
        }
    }
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return NULL;
    }
    PyObject *language = header_get(header, KEY_LANGUAGE);
    if (language == NULL) {
        language = args[3];
    }
    else if (!PyUnicode_CheckExact(language)) {
        language = args[4];
    }
    PyObject *remark = header_get(header, KEY_REMARK);
    if (remark == NULL || !PyUnicode_CheckExact(remark)) {
        remark = Py_None;
    }
    PyObject *values[8] = {
        numbers[0],
        language,
        numbers[1] ? numbers[1] : zero,
        numbers[2] ? numbers[2] : zero,
        numbers[3] ? numbers[3] : zero,
        remark,
        ext,
        body,
    };
    PyObject *command = new_with_slots((PyTypeObject *)PyTuple_GET_ITEM(slots, 0),
                                       &PyTuple_GET_ITEM(slots, 1), values, 8);
    Py_DECREF(zero);
    return command;
}

/* --- java_frame --------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len;
    Py_ssize_t cap;
} Buffer;

static int
buffer_reserve(Buffer *buf, Py_ssize_t more)
{
    if (more > PY_SSIZE_T_MAX / 2 - buf->len) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t need = buf->len + more;
    if (need <= buf->cap) {
        return 0;
    }
    Py_ssize_t cap = buf->cap * 2 > need ? buf->cap * 2 : need;
    char *grown = PyMem_Realloc(buf->data, (size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = grown;
    buf->cap = cap;
    return 0;
}

static int
buffer_add(Buffer *buf, const char *bytes, Py_ssize_t len)
{
    if (buffer_reserve(buf, len) < 0) {
        return -1;
    }
    memcpy(buf->data + buf->len, bytes, (size_t)len);
    buf->len += len;
    return 0;
}

/* ``number`` in decimal, as "%lld" writes it (snprintf's formatting machinery was ~670
 * instructions a number, four numbers a frame). */
static int
buffer_add_int(Buffer *buf, long long number)
{
    char digits[24];
    char *end = digits + sizeof digits;
    char *p = end;
    /* Negated as unsigned: LLONG_MIN has no positive long long. */
    unsigned long long left = number < 0 ? 0ULL - (unsigned long long)number
                                         : (unsigned long long)number;
    do {
        *--p = (char)('0' + left % 10);
        left /= 10;
    } while (left);
    if (number < 0) {
        *--p = '-';
    }
    return buffer_add(buf, p, end - p);
}

static const char HEX[] = "0123456789abcdef";

/* The characters json.dumps(..., ensure_ascii=True) writes as they are: printable ASCII
 * but the quote and the backslash (indexed by a 1-byte-kind string's characters; DEL and
 * above are escaped). */
#define AS_IS(c) ((c) >= 0x20 && (c) < 0x7F && (c) != '"' && (c) != '\\')
#define AS_IS_ROW(r)                                                                     \
    AS_IS(r), AS_IS(r + 1), AS_IS(r + 2), AS_IS(r + 3), AS_IS(r + 4), AS_IS(r + 5),          \
        AS_IS(r + 6), AS_IS(r + 7), AS_IS(r + 8), AS_IS(r + 9), AS_IS(r + 10),               \
        AS_IS(r + 11), AS_IS(r + 12), AS_IS(r + 13), AS_IS(r + 14), AS_IS(r + 15)
static const unsigned char JSON_AS_IS[256] = {
    AS_IS_ROW(0x00), AS_IS_ROW(0x10), AS_IS_ROW(0x20), AS_IS_ROW(0x30),
    AS_IS_ROW(0x40), AS_IS_ROW(0x50), AS_IS_ROW(0x60), AS_IS_ROW(0x70),
    AS_IS_ROW(0x80), AS_IS_ROW(0x90), AS_IS_ROW(0xA0), AS_IS_ROW(0xB0),
    AS_IS_ROW(0xC0), AS_IS_ROW(0xD0), AS_IS_ROW(0xE0), AS_IS_ROW(0xF0),
};
#undef AS_IS_ROW
#undef AS_IS

static void
put_u_escape(char *out, Py_UCS4 unit)
{
    out[0] = '\\';
    out[1] = 'u';
    out[2] = HEX[(unit >> 12) & 0xF];
    out[3] = HEX[(unit >> 8) & 0xF];
    out[4] = HEX[(unit >> 4) & 0xF];
    out[5] = HEX[unit & 0xF];
}

/* ``text`` as json.dumps(..., ensure_ascii=True) writes a string: quotes, backslash
 * escapes for " \ \b \f \n \r \t, \u00XX for the other controls and for DEL and above
 * (lower-case hex, a surrogate pair above U+FFFF). */
static int
buffer_add_json_string(Buffer *buf, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    /* At most 12 bytes per character (a surrogate pair), plus the quotes. */
    if (n > (PY_SSIZE_T_MAX - 2) / 12 || buffer_reserve(buf, n * 12 + 2) < 0) {
        if (!PyErr_Occurred()) {
            PyErr_NoMemory();
        }
        return -1;
    }
    char *out = buf->data + buf->len;
    *out++ = '"';
    Py_ssize_t i = 0;
    if (kind == PyUnicode_1BYTE_KIND) {
        /* Most strings (ids, numbers, names): the run of characters written as they are
         * is copied at once; the loop below goes on from the first that is escaped. */
        const unsigned char *bytes = (const unsigned char *)data;
        while (i < n && JSON_AS_IS[bytes[i]]) {
            i++;
        }
        memcpy(out, bytes, (size_t)i);
        out += i;
    }
    for (; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        switch (c) {
        case '"': *out++ = '\\'; *out++ = '"'; break;
        case '\\': *out++ = '\\'; *out++ = '\\'; break;
        case '\b': *out++ = '\\'; *out++ = 'b'; break;
        case '\f': *out++ = '\\'; *out++ = 'f'; break;
        case '\n': *out++ = '\\'; *out++ = 'n'; break;
        case '\r': *out++ = '\\'; *out++ = 'r'; break;
        case '\t': *out++ = '\\'; *out++ = 't'; break;
        default:
            if (c > 0xFFFF) {
                Py_UCS4 v = c - 0x10000;
                put_u_escape(out, 0xD800 | ((v >> 10) & 0x3FF));
                put_u_escape(out + 6, 0xDC00 | (v & 0x3FF));
                out += 12;
            }
            else {
                put_u_escape(out, c);
                out += 6;
            }
        }
    }
    *out++ = '"';
    buf->len = out - buf->data;
    return 0;
}

/* The frame of a command with language JAVA, no remark, string extFields and int32
 * numbers: length, serialize type JSON and header length, the header
 * {"code":..,"extFields":{..},"flag":..,"language":"JAVA","opaque":..,
 * "serializeTypeCurrentRPC":"JSON","version":..} (json.dumps's bytes: compact, ASCII),
 * and the body. None for anything else, and for a frame over the limits (encode_frame
 * then raises its error). */
static PyObject *
java_frame(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "java_frame(code, ext, flag, opaque, version, body)");
        return NULL;
    }
    PyObject *ext = args[1];
    PyObject *body = args[5];
    int ok = 1;
    long long code = ranged(args[0], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long flag = ranged(args[2], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long opaque = ranged(args[3], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    long long version = ranged(args[4], INT32_MIN_VALUE, INT32_MAX_VALUE, &ok);
    if (!ok || !PyDict_CheckExact(ext) || !PyBytes_CheckExact(body)) {
        Py_RETURN_NONE;
    }
    Buffer buf = {NULL, 0, 0};
    if (buffer_reserve(&buf, 256) < 0) {
        return NULL;
    }
    buf.len = 8; /* the prefix, written last */
    if (buffer_add(&buf, "{\"code\":", 8) < 0 || buffer_add_int(&buf, code) < 0 ||
        buffer_add(&buf, ",\"extFields\":{", 14) < 0) {
        goto error;
    }
    Py_ssize_t pos = 0;
    PyObject *key;
    PyObject *value;
    int first = 1;
    while (PyDict_Next(ext, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value)) {
            PyMem_Free(buf.data);
            Py_RETURN_NONE;
        }
        if ((!first && buffer_add(&buf, ",", 1) < 0) || buffer_add_json_string(&buf, key) < 0 ||
            buffer_add(&buf, ":", 1) < 0 || buffer_add_json_string(&buf, value) < 0) {
            goto error;
        }
        first = 0;
    }
    if (buffer_add(&buf, "},\"flag\":", 9) < 0 || buffer_add_int(&buf, flag) < 0 ||
        buffer_add(&buf, ",\"language\":\"JAVA\",\"opaque\":", 28) < 0 ||
        buffer_add_int(&buf, opaque) < 0 ||
        buffer_add(&buf, ",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":", 44) < 0 ||
        buffer_add_int(&buf, version) < 0 || buffer_add(&buf, "}", 1) < 0) {
        goto error;
    }
    Py_ssize_t header_len = buf.len - 8;
    Py_ssize_t body_len = PyBytes_GET_SIZE(body);
    if (header_len > HEADER_LEN_MASK || body_len > INT32_MAX_VALUE - 4 - header_len) {
        PyMem_Free(buf.data);
        Py_RETURN_NONE;
    }
    uint32_t length = (uint32_t)(4 + header_len + body_len);
    uint32_t type_and_len = (uint32_t)header_len; /* serialize type 0: JSON */
    PyObject *frame = PyBytes_FromStringAndSize(NULL, buf.len + body_len);
    if (frame == NULL) {
        goto error;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(frame);
    memcpy(out + 8, buf.data + 8, (size_t)header_len);
    memcpy(out + 8 + header_len, PyBytes_AS_STRING(body), (size_t)body_len);
    put_be(put_be(out, length, 4), type_and_len, 4);
    PyMem_Free(buf.data);
    return frame;
error:
    PyMem_Free(buf.data);
    return NULL;
}

/* --- cut_frames --------------------------------------------------------------------- */

/* The complete, valid frames of ``data`` (bytes or bytearray) from its start, as
 * FrameDecoder.feed cuts them: (frames, pos), pos where the first frame that is not
 * complete, or not valid, starts. The caller's Python loop goes on from pos: it keeps an
 * incomplete frame and raises the ProtocolError of an invalid one (a length below 4 or
 * over ``max_frame``, a header longer than its frame). ``slots`` is (Frame, then the slot
 * descriptors of serialize_type, header, body). */
static PyObject *
cut_frames(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "cut_frames(slots, data, max_frame)");
        return NULL;
    }
    PyObject *slots = args[0];
    if (!PyTuple_CheckExact(slots) || PyTuple_GET_SIZE(slots) != 4 ||
        !PyType_Check(PyTuple_GET_ITEM(slots, 0))) {
        PyErr_SetString(PyExc_TypeError, "cut_frames: slots is (Frame, 3 descriptors)");
        return NULL;
    }
    long long max_frame = PyLong_AsLongLong(args[2]);
    if (max_frame == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len;
    PyTypeObject *type = (PyTypeObject *)PyTuple_GET_ITEM(slots, 0);
    PyObject *frames = PyList_New(0);
    if (frames == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_ssize_t pos = 0;
    while (size - pos >= 8) {
        const unsigned char *p = data + pos;
        int32_t length = (int32_t)get_be(p, 4);
        uint32_t type_and_len = (uint32_t)get_be(p + 4, 4);
        uint32_t header_len = type_and_len & HEADER_LEN_MASK;
        if (length < 4 || (long long)length > max_frame || (long long)header_len > length - 4) {
            break; /* the Python loop raises its error */
        }
        if (size - pos - 4 < (Py_ssize_t)length) {
            break; /* incomplete */
        }
        Py_ssize_t end = pos + 4 + (Py_ssize_t)length;
        Py_ssize_t body_at = pos + 8 + (Py_ssize_t)header_len;
        PyObject *values[3];
        values[0] = PyLong_FromUnsignedLong(type_and_len >> 24);
        values[1] = PyBytes_FromStringAndSize((const char *)data + pos + 8, (Py_ssize_t)header_len);
        values[2] = PyBytes_FromStringAndSize((const char *)data + body_at, end - body_at);
        PyObject *frame = NULL;
        if (values[0] != NULL && values[1] != NULL && values[2] != NULL) {
            frame = new_with_slots(type, &PyTuple_GET_ITEM(slots, 1), values, 3);
        }
        Py_XDECREF(values[0]);
        Py_XDECREF(values[1]);
        Py_XDECREF(values[2]);
        if (frame == NULL || PyList_Append(frames, frame) < 0) {
            Py_XDECREF(frame);
            Py_DECREF(frames);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(frame);
        pos = end;
    }
    PyBuffer_Release(&view);
    PyObject *result = Py_BuildValue("(Nn)", frames, pos);
    return result;
}

/* --- build_slots -------------------------------------------------------------------- */

/* ``slot_builder(cls)``'s ``make(*values)`` (protocol/slots.py): ``cls`` with each slot set
 * through its descriptor, in field order. ``slots`` is (cls, then every slot's member
 * descriptor); exactly one value per descriptor, else TypeError, as the generated
 * function's own arity check. */
static PyObject *
build_slots(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || !PyTuple_CheckExact(args[0]) || PyTuple_GET_SIZE(args[0]) < 1 ||
        !PyType_Check(PyTuple_GET_ITEM(args[0], 0))) {
        PyErr_SetString(PyExc_TypeError, "build_slots(slots, *values): slots is (cls, *descriptors)");
        return NULL;
    }
    PyObject *slots = args[0];
    Py_ssize_t count = PyTuple_GET_SIZE(slots) - 1;
    if (nargs - 1 != count) {
        PyErr_Format(PyExc_TypeError, "make() takes %zd positional arguments but %zd were given",
                     count, nargs - 1);
        return NULL;
    }
    return new_with_slots((PyTypeObject *)PyTuple_GET_ITEM(slots, 0), &PyTuple_GET_ITEM(slots, 1),
                          args + 1, count);
}

/* --- module ------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"split_properties", rmq_split_properties, METH_O,
     "properties_from_string(text) when text is canonical, else None."},
    {"parse_properties", rmq_parse_properties, METH_O,
     "properties_from_string(text): Java's tolerant parse."},
    {"record_properties", (PyCFunction)(void (*)(void))rmq_record_properties, METH_FASTCALL,
     "record_properties(text, cluster, new_uniq_key): (bytes, pairs), or None."},
    {"parse_header", (PyCFunction)(void (*)(void))parse_header, METH_FASTCALL,
     "parse_header(cls, spec, required, ext): the header, or None for the Python parse."},
    {"command_from_json", (PyCFunction)(void (*)(void))command_from_json, METH_FASTCALL,
     "command_from_json(slots, header, body, java, other): the command, or None."},
    {"java_frame", (PyCFunction)(void (*)(void))java_frame, METH_FASTCALL,
     "java_frame(code, ext, flag, opaque, version, body): the frame, or None."},
    {"build_slots", (PyCFunction)(void (*)(void))build_slots, METH_FASTCALL,
     "build_slots(slots, *values): slots[0] with its slots set through slots[1:]."},
    {"cut_frames", (PyCFunction)(void (*)(void))cut_frames, METH_FASTCALL,
     "cut_frames(slots, data, max_frame): (complete valid frames, where the rest starts)."},
    {"encode_record", (PyCFunction)(void (*)(void))rmq_encode_record, METH_FASTCALL,
     "encode_record(topic, body, props, born_host8, store_host8, 9 numbers): bytes or None."},
    {"read_stored_fields", (PyCFunction)(void (*)(void))rmq_read_stored_fields, METH_FASTCALL,
     "read_stored_fields(buf, pos, check_crc, max_size): the fields, or None."},
    {"quick_messages", (PyCFunction)(void (*)(void))rmq_quick_messages, METH_FASTCALL,
     "quick_messages(buf, pos, out, last, next_begin_offset, ctx): (pos, last)."},
    {"topic_key_hash", (PyCFunction)(void (*)(void))rmq_topic_key_hash, METH_FASTCALL,
     "topic_key_hash(topic, key): the index hash of topic#key."},
    {"take_all", (PyCFunction)(void (*)(void))rmq_take_all, METH_FASTCALL,
     "take_all(data, offset, max_count, max_bytes, min_physical): (status, next, picked)."},
    {"cut_records", (PyCFunction)(void (*)(void))rmq_cut_records, METH_FASTCALL,
     "cut_records(span, start, picked, i, j, records, offsets): where it stopped."},
    {"index_put", (PyCFunction)(void (*)(void))rmq_index_put, METH_FASTCALL,
     "index_put(index_file, key_hash, physical_offset, store_ms): True, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "protocol._speedups",
    .m_doc = "Compiled fast paths of the remoting codec; the Python code is the definition.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (rmq_crc32 == NULL) {
        /* protocol.crc's choice (python-isal's crc32, or zlib's): the same values. */
        PyObject *crc = PyImport_ImportModule("protocol.crc");
        if (crc == NULL) {
            return NULL;
        }
        rmq_crc32 = PyObject_GetAttrString(crc, "crc32");
        Py_DECREF(crc);
        if (rmq_crc32 == NULL) {
            return NULL;
        }
    }
    for (int i = 0; i < KEY_COUNT; i++) {
        if (header_keys[i] == NULL) {
            header_keys[i] = PyUnicode_InternFromString(HEADER_KEY_NAMES[i]);
            if (header_keys[i] == NULL) {
                return NULL;
            }
        }
    }
    return PyModule_Create(&module);
}
