/*
 * Documents written straight into a response body (see doc.c): the same
 * bytes json_dumps(JSON_COMPACT) gives for the jansson tree views.c used
 * to build, without building it.  The hot views (an order, a customer's
 * orders) spent two thirds of es-query's instructions per request parsing
 * the JSON texts of a hash with jansson and dumping them again.
 */
#ifndef QUERY_DOC_H
#define QUERY_DOC_H

#include <stdbool.h>

#include "buf.h"

/* An object being written: whether a member is out yet. */
typedef struct doc_obj {
    es_buf *b;
    bool some;
} doc_obj;

/* Opens an object ('{'); doc_end closes it ('}'). */
void doc_begin(doc_obj *o, es_buf *b);
void doc_end(doc_obj *o);

/* The member key (a plain ASCII name, written as it is), its value next. */
void doc_key(doc_obj *o, const char *key);

/* Values, as views.c's jstr, jint and jtext turn hash fields into JSON:
 * NULL is null everywhere. */
void doc_str(es_buf *b, const char *s);    /* a string (bad UTF-8 repaired) */
void doc_int(es_buf *b, const char *s);    /* an integer, else a string; "" null */
void doc_text(es_buf *b, const char *s);   /* JSON text as a value, else a string */

/* True when s is JSON text exactly as json_dumps(JSON_COMPACT) writes the
 * value json_loads reads from it, so it can be copied as it is.  False
 * for anything else (white space, reals, escapes other than the short
 * ones, a repeated key, ...), which doc_text then parses with jansson. */
bool doc_canonical(const char *s);

#endif
