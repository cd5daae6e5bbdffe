/*
 * One status type for the whole core library, and the error record that
 * carries its detail.  Library code records errors here and returns the
 * status; the daemon that owns the request reports it once.  The HTTP
 * layer maps the values to 409/404/400/413/503/500.
 */
#ifndef ES_STATUS_H
#define ES_STATUS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum es_status {
    ES_OK = 0,          /* success */
    ES_ECONFLICT,       /* expected version did not match (see actual_version) */
    ES_ENOTFOUND,       /* no such stream, row or file */
    ES_EINVALID,        /* the caller's input is malformed or breaks a rule */
    ES_ETOOLARGE,       /* an event or request is over its size cap */
    ES_EIDCLASH,        /* event ids already used by a different append */
    ES_ERULE,           /* a business rule refuses the command (HTTP 422) */
    ES_EUNAVAILABLE,    /* a server is unreachable; an in-flight write's outcome is
                           unknown and retrying it with the same event ids is safe */
    ES_ENOMEM,          /* allocation failed */
    ES_EINTERNAL        /* a bug or an unexpected server answer */
} es_status;

/* Static, human text for a status ("version conflict"). Never NULL. */
const char *es_status_text(es_status st);

/* Machine-readable snake_case name of a status ("version_conflict"). */
const char *es_status_code(es_status st);

/*
 * Detail of a failure.  code is a machine-readable snake_case reason
 * ("stream_id_too_long"), field names the offending input when one is at
 * fault ("events[2].data"), message is PostgreSQL-style lower-case text.
 */
typedef struct es_error {
    es_status status;
    bool transient;             /* the same request may succeed later (a server
                                   unreachable, busy, loading or out of memory):
                                   retry instead of giving up; es_error_set sets
                                   it for ES_EUNAVAILABLE, the recorder may set
                                   it for others */
    char code[48];
    char field[64];
    char message[320];
    int64_t actual_version;     /* with ES_ECONFLICT; -1: no stream */
} es_error;

/*
 * Machine codes (es_error.code) that code outside the recorder tests for.
 * Test them with es_error_is, never by reading the message.  Codes only
 * shown to clients need no constant.
 */
#define ES_CODE_VERSION_CONFLICT "version_conflict"  /* ES_ECONFLICT with actual_version */

/* True when err records a failure whose machine code is code. */
bool es_error_is(const es_error *err, const char *code);

/* Clears err (status ES_OK, empty strings). err may be NULL. */
void es_error_clear(es_error *err);

/*
 * Records a failure in err (which may be NULL) and returns st, so callers
 * can write `return es_error_set(err, ES_EINVALID, ...)`.  code NULL means
 * es_status_code(st); field may be NULL.
 */
es_status es_error_set(es_error *err, es_status st, const char *code,
                       const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* es_error_set with the message's arguments as a va_list. */
es_status es_error_vset(es_error *err, es_status st, const char *code,
                        const char *field, const char *fmt, va_list ap)
    __attribute__((format(printf, 5, 0)));

/* Always-on assertion: prints file and line, then aborts. */
#define ES_ASSERT(cond)                                                     \
    ((cond) ? (void)0 : es__assert_fail(#cond, __FILE__, __LINE__))
void es__assert_fail(const char *expr, const char *file, int line)
    __attribute__((noreturn));

#endif
