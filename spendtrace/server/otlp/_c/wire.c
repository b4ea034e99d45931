/* The OTLP receiver's reader: what ``convert`` needs of an ExportTraceServiceRequest, read from its bytes.
 *
 * Reading the fields of upb's Python message objects, one attribute access per field, was the largest part
 * of the receiver's CPU per span (bench_otlp.py). This reads the same fields from the wire in one pass and
 * makes Python objects only for what conversion uses: ids (hex), name, times, status code, the attributes whose
 * key it reads (looked up in a table without making a string per key), the resource's attributes and the
 * first exception event's type. It returns exactly what ``_convert._read_message`` returns for the parsed
 * message (tests compare the two on generated and mutated bodies).
 *
 * It runs only on bodies upb has already parsed without error, so wire format and UTF-8 are known good;
 * it still checks every length against the end of its buffer. Where protobuf's rules would merge two
 * occurrences of a singular message field (a repeated ``value``, ``status`` or ``resource``), or a known
 * field comes with another wire type, it returns None and the caller reads the parsed message instead.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} Rd;

typedef struct {
    const uint8_t *p;
    Py_ssize_t n;
} Slice;

/* -1: malformed or a case left to the Python reader (no Python error set); -2: a Python error is set. */
#define BAIL (-1)
#define ERR (-2)

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

static inline int rd_varint(Rd *r, uint64_t *out) {
    if (r->p < r->end && *r->p < 0x80) { /* one byte: every tag and most lengths here */
        *out = *r->p++;
        return 0;
    }
    uint64_t v = 0;
    for (int shift = 0; shift < 70 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return BAIL;
}

static inline int rd_tag(Rd *r, uint32_t *field, int *wt) {
    uint64_t tag;
    if (rd_varint(r, &tag) < 0 || (tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) return BAIL;
    *field = (uint32_t)(tag >> 3);
    *wt = (int)(tag & 7);
    return 0;
}

static inline int rd_len(Rd *r, Slice *out) {
    uint64_t n;
    if (rd_varint(r, &n) < 0 || n > (uint64_t)(r->end - r->p)) return BAIL;
    out->p = r->p;
    out->n = (Py_ssize_t)n;
    r->p += n;
    return 0;
}

static inline int rd_fixed64(Rd *r, uint64_t *out) {
    if (r->end - r->p < 8) return BAIL;
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | r->p[i];
    r->p += 8;
    *out = v;
    return 0;
}

/* Skip a field of an unknown number (groups are left to the Python reader). */
static int skip(Rd *r, int wt) {
    uint64_t v;
    Slice s;
    switch (wt) {
        case WT_VARINT: return rd_varint(r, &v);
        case WT_I64:
            if (r->end - r->p < 8) return BAIL;
            r->p += 8;
            return 0;
        case WT_LEN: return rd_len(r, &s);
        case WT_I32:
            if (r->end - r->p < 4) return BAIL;
            r->p += 4;
            return 0;
        default: return BAIL;
    }
}

static Rd reader(Slice s) {
    Rd r = {s.p, s.p + s.n};
    return r;
}

/* The next occurrence of repeated message field ``field`` in ``r`` (others skipped): 1 with it in *out, 0 at the
 * end, BAIL when malformed or the field comes with another wire type. */
static int next_of(Rd *r, uint32_t field, Slice *out) {
    while (r->p < r->end) {
        uint32_t f;
        int wt;
        if (rd_tag(r, &f, &wt) < 0) return BAIL;
        if (f != field) {
            if (skip(r, wt) < 0) return BAIL;
            continue;
        }
        if (wt != WT_LEN || rd_len(r, out) < 0) return BAIL;
        return 1;
    }
    return 0;
}

static PyObject *str_of(Slice s) { return PyUnicode_DecodeUTF8((const char *)s.p, s.n, "strict"); }

/* ---- The key table: wanted attribute keys by their UTF-8 bytes, without making a str per key read. ---- */

typedef struct {
    const char *utf8; /* owned by ``key`` */
    Py_ssize_t n;
    PyObject *key;  /* the str from the ``wanted`` dict: its hash is cached, so the dict insert is cheap */
    long flag;
} Entry;

typedef struct {
    Py_ssize_t mask;
    Entry *slots; /* open addressing; ``key == NULL`` is empty */
} Table;

#define TABLE_CAPSULE "spendtrace.otlp.keys"

static uint64_t fnv1a(const uint8_t *p, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static const Entry *table_find(const Table *t, Slice k) {
    Py_ssize_t i = (Py_ssize_t)(fnv1a(k.p, k.n) & (uint64_t)t->mask);
    for (;;) {
        const Entry *e = &t->slots[i];
        if (e->key == NULL) return NULL;
        if (e->n == k.n && memcmp(e->utf8, k.p, (size_t)k.n) == 0) return e;
        i = (i + 1) & t->mask;
    }
}

static void table_free(PyObject *capsule) {
    Table *t = PyCapsule_GetPointer(capsule, TABLE_CAPSULE);
    if (t == NULL) return;
    for (Py_ssize_t i = 0; i <= t->mask; i++) Py_XDECREF(t->slots[i].key);
    PyMem_Free(t->slots);
    PyMem_Free(t);
}

static PyObject *keys(PyObject *module, PyObject *wanted) {
    (void)module;
    if (!PyDict_Check(wanted)) {
        PyErr_SetString(PyExc_TypeError, "keys() takes a dict of str -> int");
        return NULL;
    }
    Py_ssize_t size = 8;
    while (size < 4 * PyDict_GET_SIZE(wanted)) size *= 2;
    Table *t = PyMem_Calloc(1, sizeof(Table));
    Entry *slots = PyMem_Calloc((size_t)size, sizeof(Entry));
    if (t == NULL || slots == NULL) {
        PyMem_Free(t);
        PyMem_Free(slots);
        return PyErr_NoMemory();
    }
    t->mask = size - 1;
    t->slots = slots;
    PyObject *capsule = PyCapsule_New(t, TABLE_CAPSULE, table_free);
    if (capsule == NULL) {
        PyMem_Free(slots);
        PyMem_Free(t);
        return NULL;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(wanted, &pos, &k, &v)) {
        Py_ssize_t n;
        const char *utf8 = PyUnicode_Check(k) ? PyUnicode_AsUTF8AndSize(k, &n) : NULL;
        long flag = PyLong_Check(v) ? PyLong_AsLong(v) : -1;
        if (utf8 == NULL || flag == -1) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "keys() takes a dict of str -> int");
            Py_DECREF(capsule);
            return NULL;
        }
        Py_ssize_t i = (Py_ssize_t)(fnv1a((const uint8_t *)utf8, n) & (uint64_t)t->mask);
        while (slots[i].key != NULL) i = (i + 1) & t->mask;
        Py_INCREF(k);
        slots[i] = (Entry){utf8, n, k, flag};
    }
    return capsule;
}

/* ---- AnyValue / KeyValue ---- */

static PyObject *any_value(Slice s, int depth);

static PyObject *hex_of(Slice s) {
    static const char digits[] = "0123456789abcdef";
    PyObject *out = PyUnicode_New(s.n * 2, 127);
    if (out == NULL) return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(out);
    for (Py_ssize_t i = 0; i < s.n; i++) {
        d[2 * i] = (Py_UCS1)digits[s.p[i] >> 4];
        d[2 * i + 1] = (Py_UCS1)digits[s.p[i] & 15];
    }
    return out;
}

/* A KeyValue's key and value, each the last occurrence; BAIL when ``value`` occurs twice (protobuf merges). */
static int read_kv(Slice s, Slice *key, Slice *value, int *has_value) {
    Rd r = reader(s);
    key->p = s.p;
    key->n = 0;
    *has_value = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&r, &f, &wt) < 0) return BAIL;
        if (f == 1 || f == 2) {
            if (wt != WT_LEN) return BAIL;
            if (rd_len(&r, f == 1 ? key : value) < 0) return BAIL;
            if (f == 2) {
                if (*has_value) return BAIL;
                *has_value = 1;
            }
        } else if (skip(&r, wt) < 0) {
            return BAIL;
        }
    }
    return 0;
}

/* Decode a KeyValue list's ``values`` (field ``field`` of ``s``) into ``into``, the last of a repeated key winning. */
static int kv_list(Slice s, uint32_t field, PyObject *into, int depth) {
    Rd r = reader(s);
    Slice kv;
    int found;
    while ((found = next_of(&r, field, &kv)) > 0) {
        Slice key, value;
        int has_value, rc;
        if ((rc = read_kv(kv, &key, &value, &has_value)) < 0) return rc;
        PyObject *k = str_of(key);
        if (k == NULL) return ERR;
        PyObject *v = has_value ? any_value(value, depth + 1) : (Py_INCREF(Py_None), Py_None);
        if (v == NULL) {
            Py_DECREF(k);
            return PyErr_Occurred() ? ERR : BAIL;
        }
        rc = PyDict_SetItem(into, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0) return ERR;
    }
    return found;
}

/* An AnyValue as ``_convert.any_value`` gives it. NULL without an error set: leave it to the Python reader. */
static PyObject *any_value(Slice s, int depth) {
    if (depth > 64) return NULL; /* deeper than anything real: the Python reader decides */
    Rd r = reader(s);
    uint32_t kind = 0;
    Slice region = {s.p, 0};
    uint64_t scalar = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        if (rd_tag(&r, &f, &wt) < 0) return NULL;
        switch (f) {
            case 1: case 5: case 6: case 7: {
                if (wt != WT_LEN) return NULL;
                if ((f == 5 || f == 6) && kind == f) return NULL; /* the same message twice: merged */
                if (rd_len(&r, &region) < 0) return NULL;
                break;
            }
            case 2: case 3:
                if (wt != WT_VARINT || rd_varint(&r, &scalar) < 0) return NULL;
                break;
            case 4:
                if (wt != WT_I64 || rd_fixed64(&r, &scalar) < 0) return NULL;
                break;
            default:
                if (skip(&r, wt) < 0) return NULL;
                continue;
        }
        kind = f; /* a oneof: the last member set is the one */
    }
    switch (kind) {
        case 0: Py_RETURN_NONE;
        case 1: return str_of(region);
        case 2: return PyBool_FromLong(scalar != 0);
        case 3: return PyLong_FromLongLong((long long)scalar);
        case 4: {
            double d;
            memcpy(&d, &scalar, sizeof d);
            return PyFloat_FromDouble(d);
        }
        case 5: {
            PyObject *list = PyList_New(0);
            if (list == NULL) return NULL;
            Rd a = reader(region);
            Slice item;
            int found;
            while ((found = next_of(&a, 1, &item)) > 0) {
                PyObject *v = any_value(item, depth + 1);
                if (v == NULL) goto array_bail;
                int rc = PyList_Append(list, v);
                Py_DECREF(v);
                if (rc < 0) goto array_bail;
            }
            if (found < 0) goto array_bail;
            return list;
        array_bail:
            Py_DECREF(list);
            return NULL;
        }
        case 6: {
            PyObject *dict = PyDict_New();
            if (dict == NULL) return NULL;
            if (kv_list(region, 1, dict, depth) < 0) {
                Py_DECREF(dict);
                return NULL;
            }
            return dict;
        }
        default: return hex_of(region); /* 7: bytes_value */
    }
}

/* ---- Span ---- */

static const char EXCEPTION[] = "exception", EXCEPTION_TYPE[] = "exception.type";

static int slice_is(Slice s, const char *lit, size_t n) { return (size_t)s.n == n && memcmp(s.p, lit, n) == 0; }

/* The value of an Event's first ``exception.type`` attribute if the event is named ``exception``:
 * *out stays NULL when it is not, or when that attribute has no value. */
static int exception_type(Slice event, PyObject **out) {
    Rd r = reader(event);
    Slice name = {event.p, 0}, found = {event.p, 0};
    int have = 0;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        Slice s;
        if (rd_tag(&r, &f, &wt) < 0) return BAIL;
        if (f == 2 || f == 3) {
            if (wt != WT_LEN || rd_len(&r, &s) < 0) return BAIL;
            if (f == 2) {
                name = s;
            } else if (!have) {
                Slice key, value;
                int has_value, rc;
                if ((rc = read_kv(s, &key, &value, &has_value)) < 0) return rc;
                if (slice_is(key, EXCEPTION_TYPE, sizeof EXCEPTION_TYPE - 1)) {
                    have = 1;
                    if (has_value) found = value;
                    else found.p = NULL;
                }
            }
        } else if (skip(&r, wt) < 0) {
            return BAIL;
        }
    }
    if (!have || found.p == NULL || !slice_is(name, EXCEPTION, sizeof EXCEPTION - 1)) return 0;
    PyObject *v = any_value(found, 0);
    if (v == NULL) return PyErr_Occurred() ? ERR : BAIL;
    if (v == Py_None) Py_DECREF(v);
    else *out = v;
    return 0;
}

/* What one scan carries from span to span: the key table, and the last trace id with its hex string (the
 * spans of a trace come together, so they share one str: one allocation, and its hash computed once). */
typedef struct {
    const Table *t;
    Slice trace;
    PyObject *trace_hex;
} Scan;

static PyObject *trace_hex(Scan *sc, Slice trace) {
    if (sc->trace_hex != NULL && trace.n == sc->trace.n && memcmp(trace.p, sc->trace.p, (size_t)trace.n) == 0)
        return Py_NewRef(sc->trace_hex);
    PyObject *hex = hex_of(trace);
    if (hex != NULL) {
        Py_XSETREF(sc->trace_hex, Py_NewRef(hex));
        sc->trace = trace;
    }
    return hex;
}

/* One Span as the tuple ``_read_message`` makes:
 * (trace_id, span_id, parent_span_id (hex), name, start, end, status code, attrs, flags, exception type). */
static int read_span(Slice s, Scan *sc, PyObject *spans) {
    Rd r = reader(s);
    Slice trace = {s.p, 0}, span = {s.p, 0}, parent = {s.p, 0}, name = {s.p, 0}, status = {s.p, 0};
    uint64_t start = 0, end = 0;
    int have_status = 0, rc;
    long flags = 0;
    PyObject *attrs = PyDict_New(), *exc = NULL;
    if (attrs == NULL) return ERR;
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        Slice v;
        if ((rc = rd_tag(&r, &f, &wt)) < 0) goto fail;
        rc = BAIL;
        switch (f) {
            case 1: case 2: case 4: case 5: case 9: case 11: case 15:
                if (wt != WT_LEN || rd_len(&r, &v) < 0) goto fail;
                break;
            case 7: case 8:
                if (wt != WT_I64 || rd_fixed64(&r, f == 7 ? &start : &end) < 0) goto fail;
                continue;
            default:
                if (skip(&r, wt) < 0) goto fail;
                continue;
        }
        switch (f) {
            case 1: trace = v; break;
            case 2: span = v; break;
            case 4: parent = v; break;
            case 5: name = v; break;
            case 15:
                if (have_status) goto fail; /* merged by protobuf */
                have_status = 1;
                status = v;
                break;
            case 9: {
                Slice key, value;
                int has_value;
                if ((rc = read_kv(v, &key, &value, &has_value)) < 0) goto fail;
                const Entry *e = table_find(sc->t, key);
                if (e == NULL) break;
                PyObject *val = has_value ? any_value(value, 0) : (Py_INCREF(Py_None), Py_None);
                if (val == NULL) {
                    rc = PyErr_Occurred() ? ERR : BAIL;
                    goto fail;
                }
                rc = PyDict_SetItem(attrs, e->key, val);
                Py_DECREF(val);
                if (rc < 0) {
                    rc = ERR;
                    goto fail;
                }
                flags |= e->flag;
                break;
            }
            case 11:
                if (exc == NULL && (rc = exception_type(v, &exc)) < 0) goto fail;
                break;
        }
    }
    long code = 0;
    if (have_status) {
        Rd st = reader(status);
        while (st.p < st.end) {
            uint32_t f;
            int wt;
            uint64_t c;
            rc = BAIL;
            if (rd_tag(&st, &f, &wt) < 0) goto fail;
            if (f == 3) {
                if (wt != WT_VARINT || rd_varint(&st, &c) < 0) goto fail;
                code = (long)(int32_t)(uint32_t)c; /* an int32 enum, as upb truncates it */
            } else if (skip(&st, wt) < 0) {
                goto fail;
            }
        }
    }
    /* PyTuple_New and SET_ITEM: Py_BuildValue parses its format string for every span */
    PyObject *item = PyTuple_New(10);
    if (item == NULL) goto fail_error;
    PyTuple_SET_ITEM(item, 7, attrs); /* the tuple owns them from here, whatever fails next */
    PyTuple_SET_ITEM(item, 9, exc != NULL ? exc : Py_NewRef(Py_None));
    PyObject *parts[8] = {
        trace_hex(sc, trace),
        hex_of(span),
        hex_of(parent),
        str_of(name),
        PyLong_FromUnsignedLongLong(start),
        PyLong_FromUnsignedLongLong(end),
        PyLong_FromLong(code),
        PyLong_FromLong(flags),
    };
    static const int at[8] = {0, 1, 2, 3, 4, 5, 6, 8};
    int ok = 1;
    for (int i = 0; i < 8; i++) {
        if (parts[i] == NULL) ok = 0;
        PyTuple_SET_ITEM(item, at[i], parts[i]); /* NULL slots are skipped by the tuple's dealloc */
    }
    if (!ok) {
        Py_DECREF(item);
        return ERR;
    }
    rc = PyList_Append(spans, item);
    Py_DECREF(item);
    return rc < 0 ? ERR : 0;
fail_error:
    rc = ERR;
fail:
    Py_DECREF(attrs);
    Py_XDECREF(exc);
    return rc;
}

static int read_scope_spans(Slice s, Scan *sc, PyObject *spans) {
    Rd r = reader(s);
    Slice v;
    int found, rc;
    while ((found = next_of(&r, 2, &v)) > 0) {
        if ((rc = read_span(v, sc, spans)) < 0) return rc;
    }
    return found;
}

/* One ResourceSpans as (resource attributes, [span tuples]). */
static int read_resource_spans(Slice s, Scan *sc, PyObject *out) {
    Rd r = reader(s);
    int have_resource = 0, rc = BAIL;
    PyObject *attrs = PyDict_New(), *spans = PyList_New(0);
    if (attrs == NULL || spans == NULL) {
        rc = ERR;
        goto done;
    }
    while (r.p < r.end) {
        uint32_t f;
        int wt;
        Slice v;
        rc = BAIL;
        if (rd_tag(&r, &f, &wt) < 0) goto done;
        if (f != 1 && f != 2) {
            if (skip(&r, wt) < 0) goto done;
            continue;
        }
        if (wt != WT_LEN || rd_len(&r, &v) < 0) goto done;
        if (f == 1) {
            if (have_resource) goto done; /* merged by protobuf */
            have_resource = 1;
            if ((rc = kv_list(v, 1, attrs, 0)) < 0) goto done;
        } else if ((rc = read_scope_spans(v, sc, spans)) < 0) {
            goto done;
        }
    }
    PyObject *item = PyTuple_Pack(2, attrs, spans);
    rc = item == NULL ? ERR : PyList_Append(out, item) < 0 ? ERR : 0;
    Py_XDECREF(item);
done:
    Py_XDECREF(attrs);
    Py_XDECREF(spans);
    return rc;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "scan(body, keys) takes 2 arguments");
        return NULL;
    }
    Scan sc = {PyCapsule_GetPointer(args[1], TABLE_CAPSULE), {NULL, 0}, NULL};
    if (sc.t == NULL) return NULL;
    Py_buffer buf;
    if (PyObject_GetBuffer(args[0], &buf, PyBUF_SIMPLE) < 0) return NULL;
    PyObject *out = PyList_New(0);
    int rc = out == NULL ? ERR : 0;
    Rd r = {buf.buf, (const uint8_t *)buf.buf + buf.len};
    while (rc == 0 && r.p < r.end) {
        uint32_t f;
        int wt;
        Slice v;
        rc = BAIL;
        if (rd_tag(&r, &f, &wt) < 0) break;
        if (f != 1) {
            rc = skip(&r, wt);
            continue;
        }
        if (wt != WT_LEN || rd_len(&r, &v) < 0) break;
        rc = read_resource_spans(v, &sc, out);
    }
    PyBuffer_Release(&buf);
    Py_XDECREF(sc.trace_hex);
    if (rc == 0) return out;
    Py_XDECREF(out);
    if (rc == ERR && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return NULL;
        PyErr_Clear(); /* upb lets through what this does not: the Python reader decides */
    }
    Py_RETURN_NONE;
}

/* ---- Kafka record batches ---- */

static Py_ssize_t varint_size(uint64_t zz) {
    Py_ssize_t n = 1;
    while (zz >= 0x80) {
        zz >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, int64_t v) {
    uint64_t zz = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); /* zigzag, as Kafka's records use */
    while (zz >= 0x80) {
        *p++ = (uint8_t)(zz | 0x80);
        zz >>= 7;
    }
    *p++ = (uint8_t)zz;
    return p;
}

static Py_ssize_t zz_size(int64_t v) { return varint_size(((uint64_t)v << 1) ^ (uint64_t)(v >> 63)); }

/* The body of one record: attributes, timestamp delta (0), offset delta, key, value, no headers. */
static Py_ssize_t body_size(Py_ssize_t offset, Py_ssize_t klen, Py_ssize_t vlen) {
    return 1 + 1 + zz_size(offset) + zz_size(klen) + klen + zz_size(vlen) + vlen + 1;
}

/* records([(key, value), ...], limit) -> [(records bytes, count), ...]: the pairs as the records section of v2
 * record batches, a new section whenever the next record would take one to ``limit`` bytes or more (a record larger
 * than that goes alone), with the offset deltas each batch needs and every timestamp delta 0. */
static PyObject *records(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "records(pairs: list[tuple[bytes, bytes]], limit: int)");
        return NULL;
    }
    PyObject *pairs = args[0];
    Py_ssize_t limit = PyLong_AsSsize_t(args[1]);
    if (limit == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyList_GET_SIZE(pairs);
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Py_ssize_t start = 0;
    while (start < n) {
        /* first pass: how many records fit, and their size */
        Py_ssize_t size = 0, stop = start;
        for (; stop < n; stop++) {
            PyObject *pair = PyList_GET_ITEM(pairs, stop);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(pair, 0)) ||
                !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
                PyErr_SetString(PyExc_TypeError, "records() takes (key: bytes, value: bytes) pairs");
                Py_DECREF(out);
                return NULL;
            }
            Py_ssize_t body = body_size(stop - start, PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 0)),
                                        PyBytes_GET_SIZE(PyTuple_GET_ITEM(pair, 1)));
            Py_ssize_t whole = zz_size(body) + body;
            if (stop > start && size + whole >= limit) break; /* as aiokafka: a batch stays below its size */
            size += whole;
        }
        PyObject *buf = PyBytes_FromStringAndSize(NULL, size);
        if (buf == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        uint8_t *p = (uint8_t *)PyBytes_AS_STRING(buf);
        for (Py_ssize_t i = start; i < stop; i++) {
            PyObject *pair = PyList_GET_ITEM(pairs, i);
            PyObject *k = PyTuple_GET_ITEM(pair, 0), *v = PyTuple_GET_ITEM(pair, 1);
            Py_ssize_t klen = PyBytes_GET_SIZE(k), vlen = PyBytes_GET_SIZE(v);
            p = put_varint(p, body_size(i - start, klen, vlen));
            *p++ = 0;                  /* attributes */
            p = put_varint(p, 0);      /* timestamp delta */
            p = put_varint(p, i - start); /* offset delta */
            p = put_varint(p, klen);
            memcpy(p, PyBytes_AS_STRING(k), (size_t)klen);
            p += klen;
            p = put_varint(p, vlen);
            memcpy(p, PyBytes_AS_STRING(v), (size_t)vlen);
            p += vlen;
            p = put_varint(p, 0); /* headers */
        }
        PyObject *item = Py_BuildValue("(Nn)", buf, stop - start);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
        start = stop;
    }
    return out;
}

/* ---- Kafka's partitioning hash ---- */

static PyObject *murmur2(PyObject *module, PyObject *arg) {
    (void)module;
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    const uint8_t *p = buf.buf;
    uint32_t n = (uint32_t)buf.len, m = 0x5BD1E995u, h = 0x9747B28Cu ^ n;
    Py_ssize_t i = 0;
    for (; i + 4 <= buf.len; i += 4) {
        uint32_t k = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8 | (uint32_t)p[i + 2] << 16 | (uint32_t)p[i + 3] << 24;
        k *= m;
        k ^= k >> 24;
        k *= m;
        h = (h * m) ^ k;
    }
    switch (buf.len - i) {
        case 3: h ^= (uint32_t)p[i + 2] << 16; /* fall through */
        case 2: h ^= (uint32_t)p[i + 1] << 8;  /* fall through */
        case 1: h = (h ^ p[i]) * m;
    }
    h = (h ^ (h >> 13)) * m;
    h ^= h >> 15;
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(h);
}

static PyMethodDef methods[] = {
    {"keys", (PyCFunction)keys, METH_O, "keys(wanted: dict[str, int]) -> the table ``scan`` looks keys up in."},
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(body, keys) -> [(resource attrs, [span tuple, ...]), ...], or None: read the parsed message instead."},
    {"records", (PyCFunction)(void (*)(void))records, METH_FASTCALL,
     "records(pairs, limit) -> [(records, count), ...]: v2 record batch bodies of at most ``limit`` bytes each."},
    {"murmur2", murmur2, METH_O, "murmur2(key: bytes) -> int: Kafka's partitioning hash (as aiokafka's)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "wire", NULL, 0, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_wire(void) { return PyModule_Create(&module); }
