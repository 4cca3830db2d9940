/*
 * tally.c - the bounded counts of labelled outcomes declared in tally.h.
 * Tallies are small (a few labels each) and touched once per answer that
 * is not the common success, so a linear search is the cheapest lookup.
 */
#include "tally.h"

#include <stdio.h>
#include <string.h>

void tally_add(struct tally *t, const char *label)
{
    char cut[TALLY_LABEL_CHARS_MAX + 1];
    snprintf(cut, sizeof(cut), "%s", label);
    for (size_t i = 0; i < t->len; i++) {
        if (strcmp(t->entry[i].label, cut) == 0) {
            t->entry[i].count++;
            return;
        }
    }
    if (t->len == TALLY_LABELS_MAX) {
        t->other++;
        return;
    }
    struct tally_entry *e = &t->entry[t->len++];
    memcpy(e->label, cut, sizeof(cut));
    e->count = 1;
}

uint64_t tally_count(const struct tally *t, const char *label)
{
    for (size_t i = 0; i < t->len; i++)
        if (strcmp(t->entry[i].label, label) == 0)
            return t->entry[i].count;
    return 0;
}

uint64_t tally_total(const struct tally *t)
{
    uint64_t total = t->other;
    for (size_t i = 0; i < t->len; i++)
        total += t->entry[i].count;
    return total;
}

void tally_print(const struct tally *t, FILE *out)
{
    if (t->len == 0 && t->other == 0) {
        fputs("none", out);
        return;
    }
    for (size_t i = 0; i < t->len; i++)
        fprintf(out, "%s%s=%llu", i > 0 ? ", " : "", t->entry[i].label,
                (unsigned long long)t->entry[i].count);
    if (t->other > 0)
        fprintf(out, "%sother=%llu", t->len > 0 ? ", " : "", (unsigned long long)t->other);
}
