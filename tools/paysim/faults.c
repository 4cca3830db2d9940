/*
 * faults.c - fault settings and their seeded draws; see faults.h.
 */
#include "faults.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "util/util.h"

#define EXPONENTIAL_CAP_DEFAULT_MS FAULT_LATENCY_MAX_MS
/* Random seeds stay below 2^53 so that any JSON reader keeps them exact. */
#define SEED_RANDOM_MASK ((1ULL << 53) - 1)

enum latency_dist { LAT_NONE, LAT_FIXED, LAT_UNIFORM, LAT_EXPONENTIAL };

struct settings {
    unsigned scope; /* enum fault_kind bits */
    enum latency_dist dist;
    int64_t fixed_ms, min_ms, max_ms, mean_ms; /* max_ms: uniform's top, exponential's cap */
    double error_rate, hang_rate, lost_answer_rate, reset_rate, decline_rate;
    bool outage;
    uint64_t seed;
};

struct faults {
    pthread_mutex_t mu;
    struct settings s;
    uint64_t rng[4]; /* xoshiro256** state */
};

static const struct {
    const char *name;
    enum fault_kind kind;
} scope_names[] = {
    {"charge", FAULT_CHARGE},
    {"refund", FAULT_REFUND},
    {"query", FAULT_QUERY},
    {"statement", FAULT_STATEMENT},
};

/* ---- the generator: xoshiro256**, seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t s[4])
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void rng_seed(uint64_t s[4], uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s[i] = splitmix64(&x);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t s[4])
{
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static uint64_t random_seed(void)
{
    uint64_t seed;
    rand_bytes(&seed, sizeof(seed));
    return seed & SEED_RANDOM_MASK;
}

/* ---- settings ---- */

faults *faults_new(void)
{
    faults *f = xcalloc(1, sizeof(*f));
    pthread_mutex_init(&f->mu, NULL);
    f->s.scope = FAULT_SCOPE_DEFAULT;
    f->s.seed = random_seed();
    rng_seed(f->rng, f->s.seed);
    return f;
}

void faults_free(faults *f)
{
    if (!f)
        return;
    pthread_mutex_destroy(&f->mu);
    free(f);
}

#define FAIL(key, ...)                                         \
    do {                                                       \
        snprintf(err, err_size, __VA_ARGS__);                  \
        snprintf(param, param_size, "%s", key);                \
        return -1;                                             \
    } while (0)

/* A whole number of milliseconds in [0, FAULT_LATENCY_MAX_MS]. */
static int get_ms(const json_t *obj, const char *key, bool required, int64_t *out, char *err,
                  size_t err_size, char *param, size_t param_size)
{
    const json_t *v = json_object_get(obj, key);
    char name[64];
    snprintf(name, sizeof(name), "latency_ms.%s", key);
    if (!v) {
        if (required)
            FAIL(name, "%s is required", name);
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > FAULT_LATENCY_MAX_MS)
        FAIL(name, "%s must be a whole number of milliseconds from 0 to %d", name,
             FAULT_LATENCY_MAX_MS);
    *out = json_integer_value(v);
    return 0;
}

static int parse_latency(const json_t *v, struct settings *s, char *err, size_t err_size,
                         char *param, size_t param_size)
{
    if (!v || json_is_null(v)) {
        s->dist = LAT_NONE;
        return 0;
    }
    if (json_is_integer(v)) { /* shorthand: a fixed latency */
        json_t *obj = json_pack("{s:O}", "ms", v);
        int rc = get_ms(obj, "ms", true, &s->fixed_ms, err, err_size, param, param_size);
        json_decref(obj);
        s->dist = LAT_FIXED;
        return rc;
    }
    if (!json_is_object(v))
        FAIL("latency_ms", "latency_ms must be null, a number of milliseconds or an object");
    const char *dist = json_string_value(json_object_get(v, "dist"));
    const char *allowed[4] = {"dist", NULL, NULL, NULL};
    if (!dist)
        FAIL("latency_ms.dist", "latency_ms.dist must be fixed, uniform or exponential");
    if (strcmp(dist, "fixed") == 0) {
        s->dist = LAT_FIXED;
        allowed[1] = "ms";
        if (get_ms(v, "ms", true, &s->fixed_ms, err, err_size, param, param_size))
            return -1;
    } else if (strcmp(dist, "uniform") == 0) {
        s->dist = LAT_UNIFORM;
        allowed[1] = "min_ms";
        allowed[2] = "max_ms";
        if (get_ms(v, "min_ms", true, &s->min_ms, err, err_size, param, param_size) ||
            get_ms(v, "max_ms", true, &s->max_ms, err, err_size, param, param_size))
            return -1;
        if (s->min_ms > s->max_ms)
            FAIL("latency_ms.min_ms", "latency_ms.min_ms must not be over max_ms");
    } else if (strcmp(dist, "exponential") == 0) {
        s->dist = LAT_EXPONENTIAL;
        allowed[1] = "mean_ms";
        allowed[2] = "max_ms";
        s->max_ms = EXPONENTIAL_CAP_DEFAULT_MS;
        if (get_ms(v, "mean_ms", true, &s->mean_ms, err, err_size, param, param_size) ||
            get_ms(v, "max_ms", false, &s->max_ms, err, err_size, param, param_size))
            return -1;
    } else {
        FAIL("latency_ms.dist", "latency_ms.dist must be fixed, uniform or exponential");
    }
    const char *key;
    json_t *unused;
    json_object_foreach((json_t *)v, key, unused) {
        bool ok = false;
        for (size_t i = 0; i < ARRAY_LEN(allowed) && allowed[i]; i++)
            ok = ok || strcmp(key, allowed[i]) == 0;
        if (!ok) {
            char name[96];
            snprintf(name, sizeof(name), "latency_ms.%s", key);
            FAIL(name, "%s is not a setting of the %s distribution", name, dist);
        }
    }
    return 0;
}

static int parse_rate(const json_t *in, const char *key, double *out, char *err,
                      size_t err_size, char *param, size_t param_size)
{
    const json_t *v = json_object_get(in, key);
    *out = 0;
    if (!v)
        return 0;
    if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)
        FAIL(key, "%s must be a number from 0 to 1", key);
    *out = json_number_value(v);
    return 0;
}

int faults_set_json(faults *f, const json_t *in, char *err, size_t err_size, char *param,
                    size_t param_size)
{
    static const char *const keys[] = {"scope", "latency_ms", "error_rate", "hang_rate",
                                       "lost_answer_rate", "reset_rate", "decline_rate",
                                       "outage", "seed"};
    struct settings s = {.scope = FAULT_SCOPE_DEFAULT};
    param[0] = '\0';
    if (!json_is_object(in))
        FAIL("", "the faults must be a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)in, key, v) {
        bool known = false;
        for (size_t i = 0; i < ARRAY_LEN(keys); i++)
            known = known || strcmp(key, keys[i]) == 0;
        if (!known)
            FAIL(key, "%s is not a fault setting", key);
    }
    v = json_object_get(in, "scope");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) == 0)
            FAIL("scope", "scope must be a non-empty array of charge, refund, query, statement");
        s.scope = 0;
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) {
            const char *name = json_string_value(item);
            unsigned bit = 0;
            for (size_t k = 0; name && k < ARRAY_LEN(scope_names); k++)
                if (strcmp(name, scope_names[k].name) == 0)
                    bit = scope_names[k].kind;
            if (!bit)
                FAIL("scope", "scope must be a non-empty array of charge, refund, query, "
                              "statement");
            s.scope |= bit;
        }
    }
    if (parse_latency(json_object_get(in, "latency_ms"), &s, err, err_size, param, param_size) ||
        parse_rate(in, "error_rate", &s.error_rate, err, err_size, param, param_size) ||
        parse_rate(in, "hang_rate", &s.hang_rate, err, err_size, param, param_size) ||
        parse_rate(in, "lost_answer_rate", &s.lost_answer_rate, err, err_size, param,
                   param_size) ||
        parse_rate(in, "reset_rate", &s.reset_rate, err, err_size, param, param_size) ||
        parse_rate(in, "decline_rate", &s.decline_rate, err, err_size, param, param_size))
        return -1;
    v = json_object_get(in, "outage");
    if (v && !json_is_boolean(v))
        FAIL("outage", "outage must be true or false");
    s.outage = v && json_is_true(v);
    v = json_object_get(in, "seed");
    if (v && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            FAIL("seed", "seed must be a whole number from 0 to 2^63-1");
        s.seed = (uint64_t)json_integer_value(v);
    } else {
        s.seed = random_seed();
    }
    pthread_mutex_lock(&f->mu);
    f->s = s;
    rng_seed(f->rng, s.seed);
    pthread_mutex_unlock(&f->mu);
    return 0;
}

json_t *faults_get_json(faults *f)
{
    pthread_mutex_lock(&f->mu);
    struct settings s = f->s;
    pthread_mutex_unlock(&f->mu);
    json_t *scope = json_array();
    for (size_t i = 0; i < ARRAY_LEN(scope_names); i++)
        if (s.scope & scope_names[i].kind)
            json_array_append_new(scope, json_string(scope_names[i].name));
    json_t *lat = NULL;
    switch (s.dist) {
    case LAT_NONE:
        lat = json_null();
        break;
    case LAT_FIXED:
        lat = json_pack("{s:s, s:I}", "dist", "fixed", "ms", (json_int_t)s.fixed_ms);
        break;
    case LAT_UNIFORM:
        lat = json_pack("{s:s, s:I, s:I}", "dist", "uniform", "min_ms", (json_int_t)s.min_ms,
                        "max_ms", (json_int_t)s.max_ms);
        break;
    case LAT_EXPONENTIAL:
        lat = json_pack("{s:s, s:I, s:I}", "dist", "exponential", "mean_ms",
                        (json_int_t)s.mean_ms, "max_ms", (json_int_t)s.max_ms);
        break;
    }
    json_t *o = json_pack("{s:o, s:o, s:f, s:f, s:f, s:f, s:f, s:b, s:I}", "scope", scope,
                          "latency_ms", lat, "error_rate", s.error_rate, "hang_rate",
                          s.hang_rate, "lost_answer_rate", s.lost_answer_rate, "reset_rate",
                          s.reset_rate, "decline_rate", s.decline_rate, "outage", s.outage,
                          "seed", (json_int_t)s.seed);
    PAYD_ASSERT(o);
    return o;
}

bool faults_outage(faults *f, enum fault_kind kind)
{
    pthread_mutex_lock(&f->mu);
    bool on = f->s.outage && (f->s.scope & kind);
    pthread_mutex_unlock(&f->mu);
    return on;
}

static int64_t draw_latency(const struct settings *s, double u)
{
    switch (s->dist) {
    case LAT_NONE:
        return 0;
    case LAT_FIXED:
        return s->fixed_ms;
    case LAT_UNIFORM: {
        int64_t span = s->max_ms - s->min_ms + 1;
        int64_t ms = s->min_ms + (int64_t)(u * (double)span);
        return ms > s->max_ms ? s->max_ms : ms;
    }
    case LAT_EXPONENTIAL: {
        double ms = -(double)s->mean_ms * log(1.0 - u);
        return ms >= (double)s->max_ms ? s->max_ms : (int64_t)llround(ms);
    }
    }
    PAYD_ASSERT(!"bad latency distribution");
    return 0;
}

bool faults_draw(faults *f, enum fault_kind kind, struct fault_draw *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&f->mu);
    if (!(f->s.scope & kind)) {
        pthread_mutex_unlock(&f->mu);
        return false;
    }
    double u[6];
    for (int i = 0; i < 6; i++)
        u[i] = rng_unit(f->rng);
    const struct settings *s = &f->s;
    out->reset = u[0] < s->reset_rate;
    out->error = u[1] < s->error_rate;
    out->latency_ms = draw_latency(s, u[2]);
    out->decline = kind == FAULT_CHARGE && u[3] < s->decline_rate;
    out->hang = u[4] < s->hang_rate;
    out->lost = !out->hang && u[5] < s->lost_answer_rate;
    pthread_mutex_unlock(&f->mu);
    return true;
}
