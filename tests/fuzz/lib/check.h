/*
 * check.h - the invariants the fuzz targets assert, and small helpers to
 * cut a fuzz input into parts.
 *
 * A failed check prints what failed and aborts, which libFuzzer reports as
 * a crash (with the input that caused it). Checks are for what payd
 * promises whatever a client sends (docs/API.md, DESIGN.md "Bad input,
 * faults"): every request gets one answer; an error is the JSON error
 * object with a non-empty type, code and message; 429 and 503 carry
 * Retry-After; no 500 comes from input alone.
 */
#ifndef PAYD_TESTS_FUZZ_CHECK_H
#define PAYD_TESTS_FUZZ_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "lib/request.h"

#define FUZZ_CHECK(cond, ...)                                                              \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz check failed: %s (%s:%d): ", #cond, __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Checks r's answer: answered with one of the statuses in allowed (ended
 * by 0); a JSON body that parses; for 4xx and 5xx the error object; for
 * 429 and 503 a Retry-After of whole seconds. Returns the parsed body (a
 * new reference; NULL for a body that is not JSON, e.g. text/plain). With
 * PAYD_FUZZ_VERBOSE set in the environment it prints each request and its
 * answer on stderr (to see what an input does). */
json_t *fuzz_check_answer(const http_req *r, const int *allowed);

/* The error object's code in an answer parsed by fuzz_check_answer, or
 * NULL when it is not an error. */
const char *fuzz_error_code(const json_t *answer);
/* Its param, or NULL. */
const char *fuzz_error_param(const json_t *answer);

/* A string member of obj, or NULL. */
const char *fuzz_json_str(const json_t *obj, const char *name);

/* Cuts the next line (up to '\n', which is dropped, or the end) off
 * the input (data, size) into a new NUL-terminated string; bytes after a NUL in the
 * line are lost, as they would be in a header. NULL when nothing is left. */
char *fuzz_take_line(const uint8_t **data, size_t *size);

/* True when s is a string made only of bytes 0x20 to 0x7e. */
bool fuzz_printable_ascii(const char *s);

#endif
