/*
 * jsonscan.c - one string member out of a JSON object, in one pass over the
 * bytes and without allocation (see jsonscan.h for why and for what it does
 * not check).
 */
#include "jsonscan.h"

#include <stdbool.h>
#include <string.h>

#define JSONSCAN_DEPTH_MAX 64 /* nesting skipped inside a member's value */

static size_t skip_space(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* s[i] is '"': returns the index just past the closing quote, or len when
 * the string does not end; *plain_out says whether it had no escapes. */
static size_t skip_string(const char *s, size_t len, size_t i, bool *plain_out)
{
    bool plain = true;
    for (i++; i < len; i++) {
        if (s[i] == '\\') {
            plain = false;
            i++; /* the escaped character; \uXXXX's digits need no care */
        } else if (s[i] == '"') {
            *plain_out = plain;
            return i + 1;
        }
    }
    *plain_out = false;
    return len;
}

/* Skips one value starting at s[i]; returns the index past it, or len when
 * it does not end or nests deeper than JSONSCAN_DEPTH_MAX. */
static size_t skip_value(const char *s, size_t len, size_t i)
{
    bool plain;
    if (s[i] == '"')
        return skip_string(s, len, i, &plain);
    if (s[i] != '{' && s[i] != '[') {
        /* A number or a literal: up to the next separator. */
        while (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' &&
               s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            i++;
        return i;
    }
    int depth = 0;
    while (i < len) {
        char c = s[i];
        if (c == '"') {
            i = skip_string(s, len, i, &plain);
            continue;
        }
        if (c == '{' || c == '[') {
            if (++depth > JSONSCAN_DEPTH_MAX)
                return len;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        }
        i++;
    }
    return len;
}

/*
 * Finds the first top-level member named `key` of the object json[0 .. len):
 * its value is json[*start_out .. *end_out), and *plain_string_out says
 * whether that value is a string without escapes. Returns 0 or -1.
 */
static int find_member(const char *json, size_t len, const char *key, size_t *start_out,
                       size_t *end_out, bool *plain_string_out)
{
    size_t key_len = strlen(key);
    size_t i = skip_space(json, len, 0);
    if (i >= len || json[i] != '{')
        return -1;
    i = skip_space(json, len, i + 1);
    if (i < len && json[i] == '}')
        return -1; /* empty object */
    while (i < len) {
        /* "name" : value */
        if (json[i] != '"')
            return -1;
        size_t name_start = i + 1;
        bool name_plain;
        i = skip_string(json, len, i, &name_plain);
        if (i >= len)
            return -1;
        bool name_match = name_plain && i - 1 - name_start == key_len &&
                          memcmp(json + name_start, key, key_len) == 0;
        i = skip_space(json, len, i);
        if (i >= len || json[i] != ':')
            return -1;
        i = skip_space(json, len, i + 1);
        if (i >= len)
            return -1;
        size_t value_start = i;
        bool value_plain = false;
        if (json[i] == '"')
            i = skip_string(json, len, i, &value_plain);
        else
            i = skip_value(json, len, i);
        if (i >= len)
            return -1; /* the object is not closed after this value */
        if (name_match) {
            *start_out = value_start;
            *end_out = i;
            *plain_string_out = json[value_start] == '"' && value_plain;
            return 0;
        }
        i = skip_space(json, len, i);
        if (i >= len || (json[i] != ',' && json[i] != '}'))
            return -1;
        if (json[i] == '}')
            return -1; /* the end of the object, without the key */
        i = skip_space(json, len, i + 1);
    }
    return -1;
}

int jsonscan_string_member(const char *json, size_t len, const char *key, const char **value_out,
                           size_t *value_len_out)
{
    size_t start;
    size_t end;
    bool plain_string;
    if (find_member(json, len, key, &start, &end, &plain_string) != 0 || !plain_string)
        return -1;
    *value_out = json + start + 1;
    *value_len_out = end - start - 2;
    return 0;
}

int jsonscan_member(const char *json, size_t len, const char *key, const char **value_out,
                    size_t *value_len_out)
{
    size_t start;
    size_t end;
    bool plain_string;
    if (find_member(json, len, key, &start, &end, &plain_string) != 0)
        return -1;
    *value_out = json + start;
    *value_len_out = end - start;
    return 0;
}
