/*
 * jsonscan.h - finds one string member of a JSON object without building a
 * tree, for paybench's hot path: the order id in every 201 and the payment
 * id and status in every 202 (and, off the hot path, the `code` inside the
 * `error` object of a refusal). A full parse with jansson there cost about a
 * third of the client's CPU (perf, 2026-11-25); this scan walks the bytes
 * once and allocates nothing.
 *
 * It is a targeted extraction, not a validator: it follows the structure of
 * the top-level object (strings with their escapes, nested objects and
 * arrays skipped as a whole) so that a key inside a nested value, or a key
 * that only appears inside a string, is never taken for a top-level member;
 * but it does not check that numbers and literals are well formed. The
 * sample check at the end of a run still reads payments back with jansson.
 */
#ifndef PAYBENCH_JSONSCAN_H
#define PAYBENCH_JSONSCAN_H

#include <stddef.h>

/*
 * Looks in the JSON object json[0 .. len) for the first top-level member
 * named `key` (compared byte for byte; keys with escapes never match) whose
 * value is a string without escapes. Returns 0 and points *value_out at the
 * value's first byte (inside json, not NUL-terminated) with its length in
 * *value_len_out; -1 when there is no such member, the value is not a plain
 * string, or the text is not an object this scan can follow.
 */
int jsonscan_string_member(const char *json, size_t len, const char *key, const char **value_out,
                           size_t *value_len_out);

/*
 * The same search, for a member whose value may be of any type: points
 * *value_out at the value's first byte and *value_len_out at its length, as
 * written (a string with its quotes, an object with its braces), so that a
 * nested object can be searched in turn. Returns 0, or -1 when there is no
 * such member or the text is not an object this scan can follow.
 */
int jsonscan_member(const char *json, size_t len, const char *key, const char **value_out,
                    size_t *value_len_out);

#endif
