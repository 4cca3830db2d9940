/*
 * mix.h - the payment methods of a paybench run and their proportions:
 * `--mix ok=80,declined=15,error=5`, or the single `--method` of the other
 * scenarios.
 *
 * Methods are handed out by smooth weighted round robin (the way nginx
 * spreads requests over weighted upstreams): over every `total` picks each
 * method comes exactly `weight` times, spread evenly rather than in runs, so
 * a run of a few seconds already has every method in its share, and two
 * runs with the same mix send the same sequence. A mix is a fixed-size
 * value type.
 */
#ifndef PAYBENCH_MIX_H
#define PAYBENCH_MIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MIX_METHODS_MAX 8
#define MIX_NAME_CHARS_MAX 32   /* of A-Z a-z 0-9 _ - . */
#define MIX_WEIGHT_MAX 1000000
#define MIX_SPEC_CHARS_MAX (MIX_METHODS_MAX * (MIX_NAME_CHARS_MAX + 9))

struct mix_method {
    char name[MIX_NAME_CHARS_MAX + 1];
    uint32_t weight;
    int64_t current; /* the round robin's running credit */
};

struct mix {
    size_t len;
    uint64_t total; /* sum of the weights, > 0 */
    struct mix_method method[MIX_METHODS_MAX];
};

/* Whether `name` is 1 to MIX_NAME_CHARS_MAX of A-Z a-z 0-9 _ - . (a method
 * or channel name paybench may put into JSON unescaped). */
bool mix_name_ok(const char *name);

/*
 * Parses "NAME=WEIGHT,NAME=WEIGHT,..." (1 to MIX_METHODS_MAX distinct
 * names, weights 0 ... MIX_WEIGHT_MAX, at least one above 0). Returns 0, or
 * -1 with a message in error[0 .. error_cap).
 */
int mix_parse(struct mix *m, const char *spec, char *error, size_t error_cap);

/* A mix of one method. */
void mix_single(struct mix *m, const char *name);

/* The index of the next method. */
size_t mix_next(struct mix *m);

/* Writes the mix as "NAME=WEIGHT,..." into out[0 .. cap). */
void mix_format(const struct mix *m, char *out, size_t cap);

#endif
