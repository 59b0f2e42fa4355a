/* protocol._speedups: the compiled fast paths of the remoting codec (issue 14, item 6).
 *
 * Each function does the common, canonical case of one pure-Python function and answers
 * None for anything else; the caller then runs the Python code, which stays the
 * definition (errors and their wording included). tests/unit/test_speedups.py holds each
 * one equal to its Python twin on generated input, and RMQ_PURE_PYTHON=1 turns them all
 * off (protocol/speedups.py).
 *
 *   split_properties(text)            properties_from_string(text) when text is canonical
 *   parse_properties(text)            properties_from_string(text), any text
 *   parse_header(cls, spec, ext)      a generated header parse (protocol/headers.py)
 *   command_from_json(slots, header, body, java, other)
 *                                     RemotingCommand.from_frame's common case
 *   cut_frames(slots, data, max_frame) FrameDecoder.feed's complete, valid frames
 *   encode_record(topic, body, props, born_host8, store_host8, ...)
 *                                     encode_record_fields of a record with bytes properties
 *   read_stored_fields(buf, pos, check_crc, max_size)
 *                                     record_fields.read_stored_fields's fast path
 *   topic_key_hash(topic, key)        the index hash of "topic#key" (broker/store/index.py)
 *   java_frame(code, ext, flag, opaque, version, body)
 *                                     RemotingCommand.encode() of a JAVA command with no
 *                                     remark: the frame, JSON header (json.dumps's bytes)
 *
 * Rules: no input makes these read or write outside a buffer they sized; every length is
 * checked before it is used; a reference is owned or borrowed as the CPython API says, and
 * every error path releases what it holds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define PROPERTY_SEPARATOR 0x02
#define NAME_VALUE_SEPARATOR 0x01
#define HEADER_LEN_MASK 0xFFFFFF
#define INT32_MAX_VALUE 0x7FFFFFFFLL

/* --- split_properties --------------------------------------------------------------- */

/* properties_from_string(text) when text is canonical: every 0x02-ended piece holds
 * exactly one 0x01 with a non-empty key and value, no key repeats, and the text ends with
 * 0x02 (or is empty). Otherwise None. */
static PyObject *
split_properties(PyObject *self, PyObject *text)
{
    if (!PyUnicode_CheckExact(text)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t pos = 0;
    while (pos < n) {
        Py_ssize_t split = -1;
        Py_ssize_t end = -1;
        for (Py_ssize_t i = pos; i < n; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c == NAME_VALUE_SEPARATOR) {
                if (split >= 0) {
                    goto not_canonical; /* a second 0x01 in one piece */
                }
                split = i;
            }
            else if (c == PROPERTY_SEPARATOR) {
                end = i;
                break;
            }
        }
        /* No end (the text does not end with 0x02), no 0x01, an empty key or value. */
        if (end < 0 || split < 0 || split == pos || split + 1 == end) {
            goto not_canonical;
        }
        PyObject *key = PyUnicode_Substring(text, pos, split);
        if (key == NULL) {
            goto error;
        }
        PyObject *value = PyUnicode_Substring(text, split + 1, end);
        if (value == NULL) {
            Py_DECREF(key);
            goto error;
        }
        Py_ssize_t before = PyDict_GET_SIZE(result);
        int failed = PyDict_SetItem(result, key, value);
        Py_DECREF(key);
        Py_DECREF(value);
        if (failed) {
            goto error;
        }
        if (PyDict_GET_SIZE(result) == before) {
            goto not_canonical; /* a key given twice */
        }
        pos = end + 1;
    }
    return result;
not_canonical:
    Py_DECREF(result);
    Py_RETURN_NONE;
error:
    Py_DECREF(result);
    return NULL;
}

/* properties_from_string(text) (Java's string2messageProperties): split on 0x02, split
 * each piece at its first 0x01, keep a pair only when key and value are both non-empty;
 * a later key wins. Never None. */
static PyObject *
parse_properties_text(PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    PyObject *result = PyDict_New();
    if (result == NULL) {
        return NULL;
    }
    Py_ssize_t start = 0;
    while (start <= n) {
        Py_ssize_t split = -1;
        Py_ssize_t end = start;
        for (; end < n; end++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, end);
            if (c == PROPERTY_SEPARATOR) {
                break;
            }
            if (c == NAME_VALUE_SEPARATOR && split < 0) {
                split = end;
            }
        }
        if (split > start && split + 1 < end) {
            PyObject *key = PyUnicode_Substring(text, start, split);
            PyObject *value = key ? PyUnicode_Substring(text, split + 1, end) : NULL;
            if (value == NULL || PyDict_SetItem(result, key, value) < 0) {
                Py_XDECREF(key);
                Py_XDECREF(value);
                Py_DECREF(result);
                return NULL;
            }
            Py_DECREF(key);
            Py_DECREF(value);
        }
        start = end + 1;
    }
    return result;
}

static PyObject *
parse_properties(PyObject *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "parse_properties(text: str)");
        return NULL;
    }
    return parse_properties_text(text);
}

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
    PyObject *values[64];
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
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *header = type->tp_alloc(type, 0); /* object.__new__(cls), as make() does */
    if (header == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *descr = PyTuple_GET_ITEM(PyTuple_GET_ITEM(spec, i), 4);
        descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
        if (set == NULL || set(descr, header, values[i]) < 0) {
            if (set == NULL) {
                PyErr_SetString(PyExc_TypeError, "parse_header: a slot descriptor is needed");
            }
            Py_DECREF(header);
            goto error;
        }
    }
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

/* ``header[name]`` as a C number when it is an exact int in the int32 range; missing: 0
 * (the Python decoder's default). Returns 1 on success, 0 when the field is not plain,
 * -1 on an error. */
static int
int32_field(PyObject *header, const char *name, int required, PyObject **out)
{
    PyObject *value = PyDict_GetItemString(header, name); /* borrowed; str keys only */
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
    PyObject *ext = PyDict_GetItemString(header, "extFields");
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
    static const char *names[4] = {"code", "version", "opaque", "flag"};
    for (int i = 0; i < 4; i++) {
        int plain = int32_field(header, names[i], i == 0, &numbers[i]);
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
    PyObject *language = PyDict_GetItemString(header, "language");
    if (language == NULL) {
        language = args[3];
    }
    else if (!PyUnicode_CheckExact(language)) {
        language = args[4];
    }
    PyObject *remark = PyDict_GetItemString(header, "remark");
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
    PyTypeObject *type = (PyTypeObject *)PyTuple_GET_ITEM(slots, 0);
    PyObject *command = type->tp_alloc(type, 0);
    if (command == NULL) {
        Py_DECREF(zero);
        return NULL;
    }
    for (int i = 0; i < 8; i++) {
        PyObject *descr = PyTuple_GET_ITEM(slots, i + 1);
        descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
        if (set == NULL || set(descr, command, values[i]) < 0) {
            if (set == NULL) {
                PyErr_SetString(PyExc_TypeError, "command_from_json: a slot descriptor is needed");
            }
            Py_DECREF(command);
            Py_DECREF(zero);
            return NULL;
        }
    }
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

static int
buffer_add_int(Buffer *buf, long long number)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%lld", number);
    return buffer_add(buf, digits, len);
}

static const char HEX[] = "0123456789abcdef";

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
    for (Py_ssize_t i = 0; i < n; i++) {
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

/* A plain int argument of java_frame as a C number, or -1 with ok = 0 when it is not an
 * int in the int32 range (the caller then answers None). */
static long long
int32_argument(PyObject *value, int *ok)
{
    if (!PyLong_Check(value)) {
        *ok = 0;
        return -1;
    }
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || (number == -1 && PyErr_Occurred()) || number > INT32_MAX_VALUE ||
        number < -INT32_MAX_VALUE - 1) {
        PyErr_Clear();
        *ok = 0;
        return -1;
    }
    return number;
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
    long long code = int32_argument(args[0], &ok);
    long long flag = int32_argument(args[2], &ok);
    long long opaque = int32_argument(args[3], &ok);
    long long version = int32_argument(args[4], &ok);
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
    for (int i = 0; i < 4; i++) {
        out[i] = (unsigned char)(length >> (24 - 8 * i));
        out[4 + i] = (unsigned char)(type_and_len >> (24 - 8 * i));
    }
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
        int32_t length = (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
                                   ((uint32_t)p[2] << 8) | (uint32_t)p[3]);
        uint32_t type_and_len = ((uint32_t)p[4] << 24) | ((uint32_t)p[5] << 16) |
                                ((uint32_t)p[6] << 8) | (uint32_t)p[7];
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
            frame = type->tp_alloc(type, 0);
        }
        for (int i = 0; frame != NULL && i < 3; i++) {
            PyObject *descr = PyTuple_GET_ITEM(slots, i + 1);
            descrsetfunc set = Py_TYPE(descr)->tp_descr_set;
            if (set == NULL || set(descr, frame, values[i]) < 0) {
                if (set == NULL) {
                    PyErr_SetString(PyExc_TypeError, "cut_frames: a slot descriptor is needed");
                }
                Py_CLEAR(frame);
            }
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

/* --- encode_record ------------------------------------------------------------------ */

#define RECORD_FIXED_BYTES 88
#define MAGIC_V1 (-626843481)
#define MAGIC_V2 (-626843477)
#define MAX_TOPIC_LENGTH_V1 127
#define MAX_TOPIC_LENGTH_V2 32767
#define MAX_PROPERTIES_BYTES 32767
#define V6_HOST_FLAGS 0x30 /* SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6 */

static PyObject *zlib_crc32 = NULL; /* zlib.crc32, imported at module init */

static unsigned char *
put_be(unsigned char *out, unsigned long long value, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        out[i] = (unsigned char)(value & 0xFF);
        value >>= 8;
    }
    return out + bytes;
}

/* An int argument as a C number within [low, high], else ok = 0. */
static long long
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

/* protocol/message.py encode_record_fields of a record whose properties are bytes and
 * whose hosts are already their 8-byte fields (_host_v4): the same bytes, one allocation.
 * None where that function would raise (IPv6 host flags, an empty or too long topic, too
 * long properties, a number outside its field) or for arguments of other types: the
 * Python code then raises its error. Arguments: topic, body, properties, born host,
 * store host, then queue id, flag, queue offset, physical offset, sys flag, born
 * timestamp, store timestamp, reconsume times, prepared transaction offset. */
static PyObject *
encode_record(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
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
    const long long I32_LOW = -INT32_MAX_VALUE - 1;
    const long long I64_LOW = (long long)(-0x7FFFFFFFFFFFFFFFLL - 1);
    const long long I64_HIGH = 0x7FFFFFFFFFFFFFFFLL;
    int ok = 1;
    long long queue_id = ranged(args[5], I32_LOW, INT32_MAX_VALUE, &ok);
    long long flag = ranged(args[6], I32_LOW, INT32_MAX_VALUE, &ok);
    long long queue_offset = ranged(args[7], I64_LOW, I64_HIGH, &ok);
    long long phys = ranged(args[8], I64_LOW, I64_HIGH, &ok);
    long long sys_flag = ranged(args[9], I32_LOW, INT32_MAX_VALUE, &ok);
    long long born_ts = ranged(args[10], I64_LOW, I64_HIGH, &ok);
    long long store_ts = ranged(args[11], I64_LOW, I64_HIGH, &ok);
    long long reconsume = ranged(args[12], I32_LOW, INT32_MAX_VALUE, &ok);
    long long prepared = ranged(args[13], I64_LOW, I64_HIGH, &ok);
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
    PyObject *crc_value = PyObject_CallOneArg(zlib_crc32, body);
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
    out = put_be(out, (unsigned long long)(uint32_t)(v1 ? MAGIC_V1 : MAGIC_V2), 4);
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

static uint64_t
get_be(const unsigned char *p, int bytes)
{
    uint64_t value = 0;
    for (int i = 0; i < bytes; i++) {
        value = (value << 8) | p[i];
    }
    return value;
}

/* protocol/record_fields.py read_stored_fields's fast path: the record at ``pos`` of
 * ``buf`` as (total size, topic, queue id, queue offset, physical offset, sys flag,
 * properties dict, store timestamp, body length) when every check passes (sizes, magic,
 * IPv4 hosts, ports, lengths adding up, UTF-8 topic and properties, the body CRC unless
 * ``check_crc`` is false); None otherwise: the caller then decodes it with decode_record,
 * which raises the precise error. */
static PyObject *
read_stored_fields(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
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
    if (magic == MAGIC_V1 && p + 1 <= end) {
        topic_len = buf[p];
        p += 1;
        if (topic_len <= 0 || topic_len > MAX_TOPIC_LENGTH_V1) {
            goto decline;
        }
    }
    else if (magic == MAGIC_V2 && p + 2 <= end) {
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
        PyObject *crc_value = PyObject_CallOneArg(zlib_crc32, body);
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
        props = parse_properties_text(text);
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
static PyObject *
topic_key_hash(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
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

/* --- module ------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"split_properties", split_properties, METH_O,
     "properties_from_string(text) when text is canonical, else None."},
    {"parse_properties", parse_properties, METH_O,
     "properties_from_string(text): Java's tolerant parse."},
    {"parse_header", (PyCFunction)(void (*)(void))parse_header, METH_FASTCALL,
     "parse_header(cls, spec, required, ext): the header, or None for the Python parse."},
    {"command_from_json", (PyCFunction)(void (*)(void))command_from_json, METH_FASTCALL,
     "command_from_json(slots, header, body, java, other): the command, or None."},
    {"java_frame", (PyCFunction)(void (*)(void))java_frame, METH_FASTCALL,
     "java_frame(code, ext, flag, opaque, version, body): the frame, or None."},
    {"cut_frames", (PyCFunction)(void (*)(void))cut_frames, METH_FASTCALL,
     "cut_frames(slots, data, max_frame): (complete valid frames, where the rest starts)."},
    {"encode_record", (PyCFunction)(void (*)(void))encode_record, METH_FASTCALL,
     "encode_record(topic, body, props, born_host8, store_host8, 9 numbers): bytes or None."},
    {"read_stored_fields", (PyCFunction)(void (*)(void))read_stored_fields, METH_FASTCALL,
     "read_stored_fields(buf, pos, check_crc, max_size): the fields, or None."},
    {"topic_key_hash", (PyCFunction)(void (*)(void))topic_key_hash, METH_FASTCALL,
     "topic_key_hash(topic, key): the index hash of topic#key."},
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
    if (zlib_crc32 == NULL) {
        PyObject *zlib = PyImport_ImportModule("zlib");
        if (zlib == NULL) {
            return NULL;
        }
        zlib_crc32 = PyObject_GetAttrString(zlib, "crc32");
        Py_DECREF(zlib);
        if (zlib_crc32 == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module);
}
