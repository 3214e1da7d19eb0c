/* The per-item loop of guardrail.engine.loop.check_items, in C.
 *
 * guardrail/engine/loop.py holds the reference implementation in Python, and the tests check that both
 * agree on every body they generate. This file does the same steps, with the same results, without
 * the interpreter's per-statement cost: a warm 50-item page takes 15 µs instead of 32 (2,800
 * instructions per item instead of 6,200; what is left is mostly dictionary lookups). It never decides
 * anything itself: a shape it has not seen is decided by the Python engine (the `miss` callback). An
 * item it cannot read is left to the Python loop, which names the problem precisely: then it returns
 * None and the Python loop starts over from the first item.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *str_loop_facts;
static PyObject *str_explanation_json;
static PyObject *str_explanation;
static PyObject *str_why_json;

/* The Python loop turns these into a precise BadBody; other errors are real and propagate. */
static int
is_bad_item_error(void)
{
    return PyErr_ExceptionMatches(PyExc_TypeError) || PyErr_ExceptionMatches(PyExc_AttributeError);
}

/* What the loop needs of an ItemDecision. A page has a handful of distinct decisions (the memo
 * shares one object per item shape), so they are read once per call and found again by address. */
typedef struct {
    PyObject *decision;  /* borrowed: the decisions list holds it */
    int hidden;
    int discreet;
    int unknown;
    PyObject *fragment;  /* what a kept item gets as its explanation, borrowed: the decision holds it */
    PyObject *notice_key;  /* a hidden one's (deciding reason, muted topic), borrowed; NULL when kept */
    Py_ssize_t items;  /* how many items of the page it decided (counted for the cached ones only) */
} Facts;

/* guardrail.engine.loop.DISTINCT: a page with more distinct decisions than this has no `index`. */
#define FACTS_CACHED 32
/* The page's index names the decision at position p of `distinct` by the character '0' + p. */
#define INDEX_FIRST '0'

/* Where ItemDecision.loop_facts keeps each fact. */
enum {
    FACT_HIDDEN,
    FACT_DISCREET,
    FACT_UNKNOWN,
    FACT_EXPLANATION,
    FACT_EXPLANATION_JSON,
    FACT_NOTICE_KEY,
    FACT_WHY_JSON,
    FACTS
};

/* `explanation_at`: FACT_EXPLANATION, FACT_EXPLANATION_JSON or FACT_WHY_JSON, what a kept item gets. */
static int
read_facts(PyObject *decision, int explanation_at, Facts *facts)
{
    PyObject *found = PyObject_GetAttr(decision, str_loop_facts);
    if (found == NULL) {
        return -1;
    }
    if (!PyTuple_CheckExact(found) || PyTuple_GET_SIZE(found) != FACTS) {
        Py_DECREF(found);
        PyErr_SetString(PyExc_TypeError, "check(): a decision's loop_facts is not what the loop reads");
        return -1;
    }
    facts->decision = decision;
    facts->items = 0;
    facts->hidden = PyTuple_GET_ITEM(found, FACT_HIDDEN) == Py_True;
    facts->discreet = PyTuple_GET_ITEM(found, FACT_DISCREET) == Py_True;
    facts->unknown = PyTuple_GET_ITEM(found, FACT_UNKNOWN) == Py_True;
    /* Borrowed: the decision keeps its facts alive (a frozen dataclass field), and the decision is in
     * the decisions list. */
    facts->fragment = PyTuple_GET_ITEM(found, explanation_at);
    facts->notice_key = facts->hidden ? PyTuple_GET_ITEM(found, FACT_NOTICE_KEY) : NULL;
    Py_DECREF(found);
    return 0;
}

/* An item shape seen earlier in the page, and its decision: a page has a handful of shapes, and an item of
 * a shape seen before is decided without building the memo's key and looking it up. Only shapes whose
 * categories and signals are all exact strings are kept: for those, equal here means equal keys. */
typedef struct {
    Py_hash_t hash;
    PyObject *categories;  /* borrowed, as the signals: an item of the page holds them, or the defaults do */
    PyObject *signals;
    int fresh;
    PyObject *inferred;
    PyObject *decision;  /* borrowed: the decisions list holds it; NULL: an empty slot */
} Shape;

/* Open addressing, never more than half full, so that a probe always ends at an empty slot. */
#define SHAPE_SLOTS 64
#define SHAPES_KEPT 32

static int
hash_strings(PyObject *strings, Py_uhash_t *hash)
{
    Py_ssize_t count = PyList_GET_SIZE(strings);
    *hash = (*hash ^ (Py_uhash_t)count) * 1000003UL;
    for (Py_ssize_t at = 0; at < count; at++) {
        PyObject *string = PyList_GET_ITEM(strings, at);
        if (!PyUnicode_CheckExact(string)) {
            return -1;
        }
        Py_hash_t string_hash = PyObject_Hash(string);  /* cached in the string after the first time */
        if (string_hash == -1) {
            PyErr_Clear();
            return -1;
        }
        *hash = (*hash ^ (Py_uhash_t)string_hash) * 1000003UL;
    }
    return 0;
}

/* The shape's hash, or -1 when a category or signal is not an exact string (then it is not kept). */
static Py_hash_t
shape_hash(PyObject *categories, PyObject *signals, int fresh, PyObject *inferred)
{
    Py_uhash_t hash = 0x345678UL + (Py_uhash_t)(fresh * 2 + (inferred == Py_True));
    if (hash_strings(categories, &hash) < 0 || hash_strings(signals, &hash) < 0) {
        return -1;
    }
    return (Py_hash_t)hash == -1 ? -2 : (Py_hash_t)hash;
}

/* Two lists of exact strings, equal element by element. */
static int
same_strings(PyObject *one, PyObject *other)
{
    if (one == other) {
        return 1;
    }
    Py_ssize_t count = PyList_GET_SIZE(one);
    if (count != PyList_GET_SIZE(other)) {
        return 0;
    }
    for (Py_ssize_t at = 0; at < count; at++) {
        PyObject *left = PyList_GET_ITEM(one, at), *right = PyList_GET_ITEM(other, at);
        if (left != right && PyUnicode_Compare(left, right) != 0) {
            return 0;
        }
    }
    return 1;
}

/* The item's decision from the memo, or decided by `miss` (which puts it there). The memo's key, as
 * guardrail.engine.evaluate.memo_key builds it: (fresh, inferred, len(categories), *categories, *signals).
 * NULL with an exception set: an unhashable category or signal (a bad item), or a real error. */
static PyObject *
memo_decision(PyObject *memo, PyObject *miss, PyObject *categories, PyObject *signals, int fresh, PyObject *age,
              PyObject *inferred)
{
    Py_ssize_t category_count = PyList_GET_SIZE(categories), signal_count = PyList_GET_SIZE(signals);
    PyObject *key = PyTuple_New(3 + category_count + signal_count);
    if (key == NULL) {
        return NULL;
    }
    PyObject *category_count_object = PyLong_FromSsize_t(category_count);
    if (category_count_object == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, Py_NewRef(fresh ? Py_True : Py_False));
    PyTuple_SET_ITEM(key, 1, Py_NewRef(inferred));
    PyTuple_SET_ITEM(key, 2, category_count_object);
    for (Py_ssize_t at = 0; at < category_count; at++) {
        PyTuple_SET_ITEM(key, 3 + at, Py_NewRef(PyList_GET_ITEM(categories, at)));
    }
    for (Py_ssize_t at = 0; at < signal_count; at++) {
        PyTuple_SET_ITEM(key, 3 + category_count + at, Py_NewRef(PyList_GET_ITEM(signals, at)));
    }
    PyObject *decision = PyDict_GetItemWithError(memo, key);
    Py_DECREF(key);
    if (decision != NULL) {
        return Py_NewRef(decision);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *call_args[4] = {categories, signals, fresh ? age : Py_None, inferred};
    /* The one call back into Python: the engine's decide(), which never sees the page, so the list and
     * its items (borrowed by the caller) stay as they are. The caller checks anyway. */
    return PyObject_Vectorcall(miss, call_args, 4, NULL);
}

/* counts[key] += amount */
static int
add_count(PyObject *counts, PyObject *key, Py_ssize_t amount)
{
    PyObject *before = PyDict_GetItemWithError(counts, key);
    if (before == NULL && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t total = amount;
    if (before != NULL) {
        Py_ssize_t counted = PyLong_AsSsize_t(before);
        if (counted == -1 && PyErr_Occurred()) {
            return -1;
        }
        total += counted;
    }
    PyObject *after = PyLong_FromSsize_t(total);
    if (after == NULL) {
        return -1;
    }
    int failed = PyDict_SetItem(counts, key, after);
    Py_DECREF(after);
    return failed;
}

/* Whether an integer id is beyond 64 bits (signed or unsigned): a decision record keeps it as its digits. */
static int
is_wide(PyObject *item_id)
{
    int overflow = 0;
    PyLong_AsLongLongAndOverflow(item_id, &overflow);
    if (overflow <= 0) {
        return overflow < 0;
    }
    PyLong_AsUnsignedLongLong(item_id);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

PyDoc_STRVAR(check_doc,
"check(items, id_field, categories_field, signals_field, age_field, inferred_field, defaults, memo,\n"
"      fresh_seconds, annotate, miss, empty)\n"
"--\n\n"
"Decide every item of `items` (see guardrail.engine.loop.check_items); `annotate`: None, or the name of\n"
"the decision attribute each kept item gets as its `explanation`. Returns (decisions, item_ids, kept,\n"
"hidden, discreet, unknown, distinct, index, hidden_by_kind, wide_ids), or None when the Python loop\n"
"must run instead.");

static PyObject *
check(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "check() takes exactly 12 arguments");
        return NULL;
    }
    PyObject *items = args[0], *id_field = args[1], *categories_field = args[2], *signals_field = args[3];
    PyObject *age_field = args[4], *inferred_field = args[5], *defaults = args[6], *memo = args[7];
    PyObject *fresh_seconds = args[8], *miss = args[10], *empty = args[11];
    /* The decision attribute to attach to kept items as their explanation, or None: do not annotate. */
    PyObject *attach = args[9];
    int annotate = attach != Py_None;
    int explanation_at = FACT_EXPLANATION_JSON;
    if (annotate) {
        if (!PyUnicode_Check(attach)) {
            PyErr_SetString(PyExc_TypeError, "check(): annotate must be 'explanation', 'explanation_json', 'why_json' or None");
            return NULL;
        }
        if (PyUnicode_Compare(attach, str_explanation) == 0) {
            explanation_at = FACT_EXPLANATION;
        }
        else if (PyUnicode_Compare(attach, str_why_json) == 0) {
            explanation_at = FACT_WHY_JSON;
        }
        else if (PyUnicode_Compare(attach, str_explanation_json) != 0) {
            PyErr_SetString(PyExc_TypeError, "check(): annotate must be 'explanation', 'explanation_json', 'why_json' or None");
            return NULL;
        }
    }
    if (!PyList_CheckExact(items) || !PyDict_CheckExact(memo) || !PyList_CheckExact(defaults)
        || !PyList_CheckExact(empty)) {
        Py_RETURN_NONE;
    }

    Py_ssize_t count = PyList_GET_SIZE(items);
    PyObject *decisions = PyList_New(count);
    PyObject *item_ids = PyList_New(count);
    PyObject *kept = PyList_New(0);
    PyObject *hidden = PyList_New(0);
    PyObject *hidden_by_kind = PyDict_New();
    /* Written as the items are decided: ASCII, one character per item. */
    PyObject *index_string = PyUnicode_New(count, 127);
    PyObject *distinct = NULL;
    PyObject *result = NULL;
    long discreet = 0, unknown = 0;
    int wide_ids = 0;
    Facts cache[FACTS_CACHED];
    int cached = 0, overflowed = 0;
    Shape shapes[SHAPE_SLOTS];
    int shapes_kept = 0;
    memset(shapes, 0, sizeof shapes);
    if (decisions == NULL || item_ids == NULL || kept == NULL || hidden == NULL || hidden_by_kind == NULL
        || index_string == NULL) {
        goto error;
    }
    Py_UCS1 *index_chars = PyUnicode_1BYTE_DATA(index_string);
    /* Until every slot is filled, PyList_New's NULL slots are what a half-built list holds. */

    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *item = PyList_GET_ITEM(items, index);
        if (!PyDict_CheckExact(item)) {
            goto fallback;
        }
        /* Borrowed references: the item keeps them alive, and nothing below changes those keys. */
        PyObject *item_id = PyDict_GetItemWithError(item, id_field);
        if (item_id == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            goto fallback;
        }
        if (!PyUnicode_CheckExact(item_id)) {
            if (!PyLong_CheckExact(item_id)) {
                goto fallback;
            }
            if (!wide_ids && is_wide(item_id)) {
                wide_ids = 1;
            }
        }
        PyObject *categories = PyDict_GetItemWithError(item, categories_field);
        if (categories == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            categories = empty;
        }
        PyObject *signals = PyDict_GetItemWithError(item, signals_field);
        if (signals == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            signals = defaults;
        }
        else if (signals == Py_None) {
            signals = defaults;
        }
        if (!PyList_CheckExact(categories) || !PyList_CheckExact(signals)) {
            goto fallback;
        }
        PyObject *age = PyDict_GetItemWithError(item, age_field);
        if (age == NULL && PyErr_Occurred()) {
            goto error;
        }
        PyObject *inferred = PyDict_GetItemWithError(item, inferred_field);
        if (inferred == NULL) {
            if (PyErr_Occurred()) {
                goto error;
            }
            inferred = Py_False;
        }
        else if (inferred != Py_True && inferred != Py_False) {
            goto fallback;
        }
        int fresh = 0;
        if (age != NULL && age != Py_None) {
            if (!PyLong_CheckExact(age) && !PyFloat_CheckExact(age)) {
                goto fallback;
            }
            fresh = PyObject_RichCompareBool(age, fresh_seconds, Py_LT);
            if (fresh < 0) {
                goto error;
            }
        }

        Py_hash_t hash = shape_hash(categories, signals, fresh, inferred);
        Shape *empty_slot = NULL;
        PyObject *decision = NULL;
        if (hash != -1) {
            for (size_t at = (size_t)hash & (SHAPE_SLOTS - 1);; at = (at + 1) & (SHAPE_SLOTS - 1)) {
                Shape *shape = &shapes[at];
                if (shape->decision == NULL) {
                    empty_slot = shape;
                    break;
                }
                if (shape->hash == hash && shape->fresh == fresh && shape->inferred == inferred
                    && same_strings(shape->categories, categories) && same_strings(shape->signals, signals)) {
                    decision = Py_NewRef(shape->decision);
                    break;
                }
            }
        }
        if (decision == NULL) {
            decision = memo_decision(memo, miss, categories, signals, fresh, age, inferred);
            if (decision == NULL) {
                goto bad_item_or_error;
            }
            if (PyList_GET_SIZE(items) != count) {
                Py_DECREF(decision);
                goto fallback;
            }
            if (empty_slot != NULL && shapes_kept < SHAPES_KEPT) {
                *empty_slot = (Shape){hash, categories, signals, fresh, inferred, decision};
                shapes_kept++;
            }
        }
        PyList_SET_ITEM(decisions, index, decision);  /* steals the reference */
        PyList_SET_ITEM(item_ids, index, Py_NewRef(item_id));

        Facts found_facts, *facts = NULL;
        int position = 0;
        for (; position < cached; position++) {
            if (cache[position].decision == decision) {
                facts = &cache[position];
                break;
            }
        }
        if (facts == NULL) {
            if (cached < FACTS_CACHED) {
                facts = &cache[cached++];
            }
            else {
                facts = &found_facts;
                overflowed = 1;
            }
            if (read_facts(decision, explanation_at, facts) < 0) {
                goto error;
            }
        }
        if (facts != &found_facts) {
            index_chars[index] = (Py_UCS1)(INDEX_FIRST + position);
            facts->items++;
        }
        unknown += facts->unknown;
        if (facts->hidden) {
            if (PyList_Append(hidden, decision) < 0) {
                goto error;
            }
            /* The cached ones are counted once, after the loop. */
            if (facts == &found_facts && add_count(hidden_by_kind, facts->notice_key, 1) < 0) {
                goto error;
            }
            continue;
        }
        discreet += facts->discreet;
        if (annotate && PyDict_SetItem(item, str_explanation, facts->fragment) < 0) {
            goto error;
        }
        if (PyList_Append(kept, item) < 0) {
            goto error;
        }
    }
    distinct = PyList_New(cached);
    if (distinct == NULL) {
        goto error;
    }
    for (int at = 0; at < cached; at++) {
        PyList_SET_ITEM(distinct, at, Py_NewRef(cache[at].decision));
        if (cache[at].hidden && add_count(hidden_by_kind, cache[at].notice_key, cache[at].items) < 0) {
            goto error;
        }
    }
    if (overflowed) {
        result = Py_BuildValue("(OOOOllOOOO)", decisions, item_ids, kept, hidden, discreet, unknown, Py_None,
                               Py_None, hidden_by_kind, wide_ids ? Py_True : Py_False);
    }
    else {
        result = Py_BuildValue("(OOOOllOOOO)", decisions, item_ids, kept, hidden, discreet, unknown, distinct,
                               index_string, hidden_by_kind, wide_ids ? Py_True : Py_False);
    }
    goto done;

bad_item_or_error:
    if (!is_bad_item_error()) {
        goto error;
    }
    PyErr_Clear();
fallback:
    result = Py_NewRef(Py_None);
    goto done;
error:
    result = NULL;
done:
    /* A list left half-filled by a fallback still holds NULL slots, which list_dealloc skips. */
    Py_XDECREF(decisions);
    Py_XDECREF(item_ids);
    Py_XDECREF(kept);
    Py_XDECREF(hidden);
    Py_XDECREF(hidden_by_kind);
    Py_XDECREF(index_string);
    Py_XDECREF(distinct);
    return result;
}

PyDoc_STRVAR(has_digit_run_doc,
"has_digit_run(body, length)\n"
"--\n\n"
"Whether the bytes `body` hold `length` (>= 1) ASCII digits in a row (see guardrail.bodies.read_json).");

static inline int
is_digit(unsigned char byte)
{
    return byte >= '0' && byte <= '9';
}

static PyObject *
has_digit_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "has_digit_run() takes bytes and a length");
        return NULL;
    }
    Py_ssize_t length = PyLong_AsSsize_t(args[1]);
    if (length == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (length < 1) {
        PyErr_SetString(PyExc_ValueError, "has_digit_run() needs a length of at least 1");
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    /* Any `length` bytes in a row hold one of the probes, which are `length` apart: a body without
     * long runs costs one look every `length` bytes, plus the short runs the probes land in. */
    for (Py_ssize_t probe = length - 1; probe < size; probe += length) {
        if (!is_digit(data[probe])) {
            continue;
        }
        Py_ssize_t first = probe, last = probe;
        while (first > 0 && is_digit(data[first - 1])) {
            first--;
        }
        while (last + 1 < size && is_digit(data[last + 1])) {
            last++;
        }
        if (last - first + 1 >= length) {
            Py_RETURN_TRUE;
        }
        /* A longer run starts after this one ends: the next probe, `length` on, still lands in it. */
        probe = last;
    }
    Py_RETURN_FALSE;
}

PyDoc_STRVAR(fill_links_doc,
"fill_links(body, kept, id_field, base, segment)\n"
"--\n\n"
"`body` (a page written with each kept item's `why_json` explanation) with every NUL placeholder replaced by\n"
"that item's link, `base` + its id as a path segment (see guardrail.why_links.fill_links_python, the reference).\n"
"`segment(id)` percent-encodes an id that is not plain unreserved ASCII. An id that is a dot segment gets no\n"
"`why` at all. RuntimeError if the placeholders and the items do not pair up.");

/* RFC 3986 unreserved characters: an id made only of these is its own path segment. */
static inline int
is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
           || c == '_' || c == '~';
}

/* How an item id stands in its link: as it is, not at all (a dot segment: a server resolves `.` and `..`, even
 * as %2E, away, so no page could be reached by them), or percent-encoded by `segment()`. */
enum { SEGMENT_PLAIN, SEGMENT_DOT, SEGMENT_ENCODE };

static int
segment_kind(PyObject *item_id)
{
    if (!PyUnicode_CheckExact(item_id) || !PyUnicode_IS_ASCII(item_id)) {
        return SEGMENT_ENCODE;
    }
    const char *text = (const char *)PyUnicode_1BYTE_DATA(item_id);
    Py_ssize_t length = PyUnicode_GET_LENGTH(item_id);
    for (Py_ssize_t at = 0; at < length; at++) {
        if (!is_unreserved((unsigned char)text[at])) {
            return SEGMENT_ENCODE;
        }
    }
    return (length == 1 || length == 2) && text[0] == '.' && text[length - 1] == '.' ? SEGMENT_DOT : SEGMENT_PLAIN;
}

/* One kept item's link: its id as a path segment (borrowed from the id, or from `owned`), or none. */
typedef struct {
    const char *text;
    Py_ssize_t length;
    PyObject *owned;
    int none;  /* a dot segment: the item's explanation gets no `why` */
} Segment;

/* What the placeholder stands in: `,"why":"` before it, and the closing quote after it. */
#define WHY_KEY_BYTES 8

static PyObject *
fill_links(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "fill_links() takes exactly 5 arguments");
        return NULL;
    }
    PyObject *body = args[0], *kept = args[1], *id_field = args[2], *base = args[3], *segment = args[4];
    if (!PyBytes_CheckExact(body) || !PyList_CheckExact(kept) || !PyBytes_CheckExact(base)) {
        PyErr_SetString(PyExc_TypeError, "fill_links() takes the body and the base as bytes, the kept items as a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(kept), linked = 0;
    Segment *segments = PyMem_Calloc(count > 0 ? count : 1, sizeof(Segment));
    if (segments == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *result = NULL;
    Py_ssize_t base_size = PyBytes_GET_SIZE(base), extra = 0;
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *item = PyList_GET_ITEM(kept, index);
        if (!PyDict_CheckExact(item)) {
            PyErr_SetString(PyExc_TypeError, "fill_links(): a kept item is not a dict");
            goto done;
        }
        PyObject *explanation = PyDict_GetItemWithError(item, str_explanation);
        if (explanation == NULL && PyErr_Occurred()) {
            goto done;
        }
        if (explanation == NULL || explanation == Py_None) {
            continue;  /* kept without an explanation: no placeholder */
        }
        PyObject *item_id = PyDict_GetItemWithError(item, id_field);
        if (item_id == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "fill_links(): a kept item has no id");
            }
            goto done;
        }
        Segment *found = &segments[linked++];
        int kind = segment_kind(item_id);
        if (kind != SEGMENT_ENCODE) {
            found->none = kind == SEGMENT_DOT;
            found->text = (const char *)PyUnicode_1BYTE_DATA(item_id);
            found->length = PyUnicode_GET_LENGTH(item_id);
        }
        else {
            found->owned = PyObject_CallOneArg(segment, item_id);
            if (found->owned == NULL) {
                goto done;
            }
            if (!PyUnicode_Check(found->owned) || !PyUnicode_IS_ASCII(found->owned)) {
                PyErr_SetString(PyExc_TypeError, "fill_links(): segment() must return ASCII text");
                goto done;
            }
            found->text = (const char *)PyUnicode_1BYTE_DATA(found->owned);
            found->length = PyUnicode_GET_LENGTH(found->owned);
        }
        extra += found->none ? -(WHY_KEY_BYTES + 2) : base_size + found->length - 1;
    }
    const char *source = PyBytes_AS_STRING(body);
    Py_ssize_t size = PyBytes_GET_SIZE(body);
    result = PyBytes_FromStringAndSize(NULL, size + extra);
    if (result == NULL) {
        goto done;
    }
    char *out = PyBytes_AS_STRING(result), *start = out;
    Py_ssize_t at = 0, filled = 0;
    for (;;) {
        const char *nul = memchr(source + at, 0, size - at);
        Py_ssize_t until = nul != NULL ? nul - source : size;
        if (nul != NULL && (filled >= linked || (segments[filled].none && until - at < WHY_KEY_BYTES)
                            || until + 1 >= size)) {
            break;  /* more placeholders than links, or one without its key: reported below */
        }
        memcpy(out, source + at, until - at);
        out += until - at;
        if (nul == NULL) {
            at = size;
            break;
        }
        Segment *found = &segments[filled++];
        if (found->none) {
            out -= WHY_KEY_BYTES;
            at = until + 2;
        }
        else {
            memcpy(out, PyBytes_AS_STRING(base), base_size);
            memcpy(out + base_size, found->text, found->length);
            out += base_size + found->length;
            at = until + 1;
        }
    }
    if (at != size || filled != linked || out - start != size + extra) {
        Py_CLEAR(result);
        PyErr_SetString(PyExc_RuntimeError, "fill_links(): the placeholders and the kept items do not pair up");
    }
done:
    for (Py_ssize_t index = 0; index < linked; index++) {
        Py_XDECREF(segments[index].owned);
    }
    PyMem_Free(segments);
    return result;
}

PyDoc_STRVAR(link_dicts_doc,
"link_dicts(kept, id_field, base, segment)\n"
"--\n\n"
"Give each kept item's explanation dict its `why` link, `base` + its id as a path segment: a copy of the\n"
"shared dict with the link (see guardrail.why_links.link_dicts_python, the reference). An id that is a dot\n"
"segment keeps the shared dict. Returns True, or False (nothing changed) when a kept item is not a dict.");

static PyObject *str_why;

static PyObject *
link_dicts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "link_dicts() takes exactly 4 arguments");
        return NULL;
    }
    PyObject *kept = args[0], *id_field = args[1], *base = args[2], *segment = args[3];
    if (!PyList_CheckExact(kept) || !PyUnicode_CheckExact(base)) {
        PyErr_SetString(PyExc_TypeError, "link_dicts() takes the kept items as a list and the base as str");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(kept);
    for (Py_ssize_t index = 0; index < count; index++) {
        if (!PyDict_CheckExact(PyList_GET_ITEM(kept, index))) {
            Py_RETURN_FALSE;
        }
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        PyObject *item = PyList_GET_ITEM(kept, index);
        PyObject *explanation = PyDict_GetItemWithError(item, str_explanation);  /* borrowed */
        if (explanation == NULL && PyErr_Occurred()) {
            return NULL;
        }
        if (explanation == NULL || !PyDict_CheckExact(explanation)) {
            continue;  /* kept without an explanation */
        }
        PyObject *item_id = PyDict_GetItemWithError(item, id_field);
        if (item_id == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError, "link_dicts(): a kept item has no id");
            }
            return NULL;
        }
        int kind = segment_kind(item_id);
        if (kind == SEGMENT_DOT) {
            continue;  /* no page could be reached by it */
        }
        PyObject *text = kind == SEGMENT_PLAIN ? Py_NewRef(item_id) : PyObject_CallOneArg(segment, item_id);
        if (text == NULL) {
            return NULL;
        }
        PyObject *link = PyUnicode_Concat(base, text);
        Py_DECREF(text);
        if (link == NULL) {
            return NULL;
        }
        PyObject *copy = PyDict_Copy(explanation);
        int failed = copy == NULL || PyDict_SetItem(copy, str_why, link) < 0 || PyDict_SetItem(item, str_explanation, copy) < 0;
        Py_DECREF(link);
        Py_XDECREF(copy);
        if (failed) {
            return NULL;
        }
    }
    Py_RETURN_TRUE;
}

static PyMethodDef speedups_methods[] = {
    {"check", (PyCFunction)(void (*)(void))check, METH_FASTCALL, check_doc},
    {"fill_links", (PyCFunction)(void (*)(void))fill_links, METH_FASTCALL, fill_links_doc},
    {"link_dicts", (PyCFunction)(void (*)(void))link_dicts, METH_FASTCALL, link_dicts_doc},
    {"has_digit_run", (PyCFunction)(void (*)(void))has_digit_run, METH_FASTCALL, has_digit_run_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *module)
{
    str_loop_facts = PyUnicode_InternFromString("loop_facts");
    str_explanation_json = PyUnicode_InternFromString("explanation_json");
    str_explanation = PyUnicode_InternFromString("explanation");
    str_why_json = PyUnicode_InternFromString("why_json");
    str_why = PyUnicode_InternFromString("why");
    if (!str_loop_facts || !str_explanation_json || !str_explanation || !str_why_json || !str_why) {
        return -1;
    }
    return PyModule_AddIntConstant(module, "DISTINCT", FACTS_CACHED);
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
    {0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "guardrail._speedups",
    .m_doc = "The hot loop of guardrail.engine.loop.check_items in C; guardrail/engine/loop.py is the reference.",
    .m_size = 0,
    .m_methods = speedups_methods,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
