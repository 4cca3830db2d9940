/*
 * faults.h - the faults paysim injects, set at run time through
 * PUT /control/faults, and the seeded random draws that decide them.
 *
 * The settings are one value, replaced whole. Each request in scope draws
 * its fate once, when its head arrives, in a fixed order (reset, error,
 * latency, decline, hang, lost answer), six numbers from one xoshiro256**
 * generator. Setting the faults reseeds the generator (from "seed", or a
 * random seed that GET shows), so one client sending the same requests in
 * the same order sees the same faults again.
 */
#ifndef PAYSIM_FAULTS_H
#define PAYSIM_FAULTS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a request is, for the "scope" of the faults. */
enum fault_kind {
    FAULT_CHARGE = 1,    /* POST /v1/charges, POST /v1/charges/{no}/close */
    FAULT_REFUND = 2,    /* POST /v1/refunds */
    FAULT_QUERY = 4,     /* GET /v1/charges/{no}, GET /v1/refunds/{no} */
    FAULT_STATEMENT = 8, /* GET /v1/statements (only when named in the scope) */
};
#define FAULT_SCOPE_DEFAULT (FAULT_CHARGE | FAULT_REFUND | FAULT_QUERY)

#define FAULT_LATENCY_MAX_MS 60000

/* One request's fate. */
struct fault_draw {
    bool reset;         /* connection reset at once, nothing done */
    bool error;         /* 500 system_error, nothing done */
    int64_t latency_ms; /* waited before the work */
    bool decline;       /* a charge with method "ok" is declined */
    bool hang;          /* work done, never answered */
    bool lost;          /* work done, connection closed without an answer */
};

typedef struct faults faults;

/* No faults, a random seed. */
faults *faults_new(void);
void faults_free(faults *f);

/* Replaces the settings with those of a JSON object (see docs/paysim.md)
 * and reseeds; on a bad value changes nothing and returns -1 with a message
 * in err and the offending key in param (param_size bytes). */
int faults_set_json(faults *f, const json_t *in, char *err, size_t err_size, char *param,
                    size_t param_size);
/* The settings in force, as a new JSON object of the same form. */
json_t *faults_get_json(faults *f);

/* True when an outage is on for requests of this kind. */
bool faults_outage(faults *f, enum fault_kind kind);
/* Draws a request's fate; a request out of scope draws nothing and gets
 * an empty fate (false). */
bool faults_draw(faults *f, enum fault_kind kind, struct fault_draw *out);

#endif
