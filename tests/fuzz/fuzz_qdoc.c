/*
 * libFuzzer target for query/doc.c, which es-query uses to write the
 * read model's hash fields (JSON texts from events, so from any client
 * that appends) into its answers without jansson.  Besides not
 * crashing, what it writes for any text must be byte for byte what
 * jansson writes for the same value (json_loads, else a string; dumped
 * compact): the answers and their ETags must not change.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "doc.h"
#include "event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_t *
ref_str(const char *s)
{
    json_t *v;
    char *copy;

    if ((v = json_string(s)) != NULL)
        return v;
    if ((copy = strdup(s)) == NULL)
        abort();
    es_text_make_utf8(copy);
    v = json_string(copy);
    free(copy);
    return v;
}

static json_t *
ref_text(const char *s)
{
    json_t *v = json_loads(s, JSON_DECODE_ANY, NULL);

    return v ? v : ref_str(s);
}

/* doc_fn's output for s is ref's dump of s. */
static void
same(void (*doc_fn)(es_buf *, const char *), json_t *(*ref)(const char *), const char *s)
{
    es_buf b = ES_BUF_INIT;
    json_t *v = ref(s);
    char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    json_decref(v);
    doc_fn(&b, s);
    if (want == NULL || es_buf_failed(&b) || strcmp(b.data, want) != 0)
        abort();
    free(want);
    es_buf_free(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';                 /* a hash field is a C string here */
    same(doc_text, ref_text, s);
    same(doc_str, ref_str, s);
    free(s);
    return 0;
}
