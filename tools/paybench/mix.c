/*
 * mix.c - the weighted method mix declared in mix.h.
 */
#include "mix.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define MIX_NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-."

bool mix_name_ok(const char *name)
{
    size_t len = strlen(name);
    return len > 0 && len <= MIX_NAME_CHARS_MAX && strspn(name, MIX_NAME_CHARS) == len;
}

int mix_parse(struct mix *m, const char *spec, char *error, size_t error_cap)
{
    memset(m, 0, sizeof(*m));
    if (strlen(spec) > MIX_SPEC_CHARS_MAX) {
        snprintf(error, error_cap, "too long");
        return -1;
    }
    char copy[MIX_SPEC_CHARS_MAX + 1];
    snprintf(copy, sizeof(copy), "%s", spec);
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item != NULL;
         item = strtok_r(NULL, ",", &save)) {
        char *equals = strchr(item, '=');
        if (equals == NULL) {
            snprintf(error, error_cap, "\"%s\" is not NAME=WEIGHT", item);
            return -1;
        }
        *equals = '\0';
        const char *weight_text = equals + 1;
        if (!mix_name_ok(item)) {
            snprintf(error, error_cap, "method \"%s\": 1 to %d of A-Z a-z 0-9 _ - .", item,
                     MIX_NAME_CHARS_MAX);
            return -1;
        }
        char *end = NULL;
        errno = 0;
        long weight = strtol(weight_text, &end, 10);
        if (errno != 0 || end == weight_text || *end != '\0' || weight < 0 ||
            weight > MIX_WEIGHT_MAX) {
            snprintf(error, error_cap, "weight of %s: an integer in 0 ... %d", item,
                     MIX_WEIGHT_MAX);
            return -1;
        }
        for (size_t i = 0; i < m->len; i++) {
            if (strcmp(m->method[i].name, item) == 0) {
                snprintf(error, error_cap, "method %s given twice", item);
                return -1;
            }
        }
        if (m->len == MIX_METHODS_MAX) {
            snprintf(error, error_cap, "at most %d methods", MIX_METHODS_MAX);
            return -1;
        }
        struct mix_method *mm = &m->method[m->len++];
        snprintf(mm->name, sizeof(mm->name), "%s", item);
        mm->weight = (uint32_t)weight;
        m->total += (uint64_t)weight;
    }
    if (m->len == 0 || m->total == 0) {
        snprintf(error, error_cap, "no method with a weight above 0");
        return -1;
    }
    return 0;
}

void mix_single(struct mix *m, const char *name)
{
    memset(m, 0, sizeof(*m));
    PB_ASSERT(mix_name_ok(name));
    snprintf(m->method[0].name, sizeof(m->method[0].name), "%s", name);
    m->method[0].weight = 1;
    m->len = 1;
    m->total = 1;
}

size_t mix_next(struct mix *m)
{
    PB_ASSERT(m->len > 0 && m->total > 0);
    size_t best = 0;
    for (size_t i = 0; i < m->len; i++) {
        m->method[i].current += m->method[i].weight;
        if (m->method[i].current > m->method[best].current)
            best = i;
    }
    m->method[best].current -= (int64_t)m->total;
    return best;
}

void mix_format(const struct mix *m, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < m->len && used < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s=%u", i > 0 ? "," : "", m->method[i].name,
                         m->method[i].weight);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}
