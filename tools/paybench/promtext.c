/*
 * promtext.c - the Prometheus text reader declared in promtext.h.
 *
 * A sample line is `name{k="v",...} value [timestamp]` or `name value`;
 * comment lines start with '#'. The reader walks the text line by line and
 * never looks past `len`, so the buffer need not be NUL-terminated.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "promtext.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define PROMTEXT_VALUE_CHARS_MAX 63

/* Whether [labels, labels + labels_len) (the text between '{' and '}')
 * holds `pair` as a whole element: preceded by the start or ',' and followed
 * by the end or ','. */
static bool labels_have(const char *labels, size_t labels_len, const char *pair)
{
    size_t pair_len = strlen(pair);
    if (pair_len == 0 || pair_len > labels_len)
        return false;
    for (size_t at = 0; at + pair_len <= labels_len; at++) {
        if (memcmp(labels + at, pair, pair_len) != 0)
            continue;
        bool starts = at == 0 || labels[at - 1] == ',';
        bool ends = at + pair_len == labels_len || labels[at + pair_len] == ',';
        if (starts && ends)
            return true;
    }
    return false;
}

/* Parses the value that starts at line[0] (after the name and labels). */
static int parse_value(const char *line, size_t line_len, uint64_t *value_out)
{
    size_t at = 0;
    while (at < line_len && (line[at] == ' ' || line[at] == '\t'))
        at++;
    size_t end = at;
    while (end < line_len && line[end] != ' ' && line[end] != '\t')
        end++;
    size_t value_len = end - at;
    if (value_len == 0 || value_len > PROMTEXT_VALUE_CHARS_MAX)
        return -2;
    char value_text[PROMTEXT_VALUE_CHARS_MAX + 1];
    memcpy(value_text, line + at, value_len);
    value_text[value_len] = '\0';
    char *parse_end = NULL;
    double value = strtod(value_text, &parse_end);
    if (parse_end != value_text + value_len || !isfinite(value) || value < 0.0 ||
        value > 1e18)
        return -2;
    *value_out = (uint64_t)llround(value);
    return 0;
}

int promtext_find_counter(const char *text, size_t len, const char *name,
                          const char *const *label_pairs, size_t pair_count,
                          uint64_t *value_out)
{
    size_t name_len = strlen(name);
    PB_ASSERT(name_len > 0);
    size_t line_start = 0;
    while (line_start < len) {
        const char *line = text + line_start;
        const char *newline = memchr(line, '\n', len - line_start);
        size_t line_len = newline ? (size_t)(newline - line) : len - line_start;
        line_start += line_len + 1;

        if (line_len <= name_len || memcmp(line, name, name_len) != 0)
            continue;
        char after = line[name_len];
        if (after == ' ' || after == '\t') {
            if (pair_count == 0)
                return parse_value(line + name_len, line_len - name_len, value_out);
            continue;
        }
        if (after != '{')
            continue; /* a longer name with the same prefix */
        const char *labels = line + name_len + 1;
        const char *close = memchr(labels, '}', line_len - name_len - 1);
        if (close == NULL)
            continue;
        size_t labels_len = (size_t)(close - labels);
        bool all = true;
        for (size_t i = 0; i < pair_count && all; i++)
            all = labels_have(labels, labels_len, label_pairs[i]);
        if (!all)
            continue;
        size_t rest = line_len - (size_t)(close + 1 - line);
        return parse_value(close + 1, rest, value_out);
    }
    return -1;
}
