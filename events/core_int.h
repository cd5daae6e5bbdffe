/*
 * Internals of the core library shared between its modules, like nats.c's
 * natsp.h: nothing outside events/ includes this header (the tests of the
 * modules may).  Every name here carries the es__ marker.
 */
#ifndef ES_CORE_INT_H
#define ES_CORE_INT_H

#include <stddef.h>
#include <stdint.h>

/*
 * Decodes the multi-byte UTF-8 sequence at p (first byte >= 0x80, end the
 * end of the text) into *cp.  Returns its length, or 0 when it is not
 * valid UTF-8 (overlong, a surrogate, past U+10FFFF, truncated).
 */
int es__utf8_decode(const unsigned char *p, const unsigned char *end, uint32_t *cp);

/* The 16 bytes of s, a valid UUID (es_uuid_valid). */
void es__uuid_bytes(const char *s, unsigned char out[16]);

/* SHA-1 of data into digest (20 bytes); used for name-based UUIDs. */
void es__sha1(const void *data, size_t len, unsigned char digest[20]);

#endif
