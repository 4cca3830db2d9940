/*
 * api_internal.h - what the route files (charges.c, refunds.c,
 * statements.c, control.c) share with api.c: the per-request call, the
 * route table's row, and the helpers that answer.
 */
#ifndef PAYSIM_API_INTERNAL_H
#define PAYSIM_API_INTERNAL_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "api.h"
#include "model.h"
#include "util/util.h"

struct api {
    struct api_config cfg;
    atomic_int waiting; /* requests waiting out an injected latency */
};

enum access {
    ACCESS_SIGNED,  /* /v1: signed by the merchant, faults apply */
    ACCESS_CONTROL, /* /control: loopback peers only, no faults */
    ACCESS_PUBLIC,  /* /healthz */
};

struct call;

struct route {
    const char *method;
    const char *prefix; /* the path, or what precedes its {param} */
    const char *suffix; /* NULL: no {param}; else what follows it ("" or "/close") */
    enum access access;
    enum fault_kind kind; /* ACCESS_SIGNED only */
    /* Checks the request; false when it has answered it (400). May be NULL. */
    bool (*prepare)(struct call *c);
    /* A read: does it and ends in api_deliver(). */
    void (*read)(struct call *c);
    /* A write (read is NULL): prepare() made c->op; once it is journaled,
     * render() turns its result into the answer, and api_deliver() follows. */
    void (*render)(struct call *c);
};

/* An answer held until api_deliver() applies hang / lost answer. */
struct held_answer {
    int status;
    const char *content_type;
    char *body;
    size_t len;
};

/* One request's state (the server's user pointer). */
struct call {
    api *api;
    http_req *r;
    const struct route *route;
    char param[OUT_NO_MAX + 1]; /* the path's {param}, when valid */
    char subject[OUT_NO_MAX + 1]; /* for the log: the merchant number concerned */
    bool drawn;                   /* draw holds this request's fate */
    struct fault_draw draw;
    bool cancelled; /* its latency was cut short: paysim is stopping */
    json_t *in;     /* the parsed body, when there is one */
    struct jop *op; /* a write, from prepare to its answer */
    int64_t day_start_ms; /* statements */
    char date[11];
    struct held_answer answer;
};

/* Parses the body as a JSON object whose keys are all in allowed (NULL-
 * terminated); on failure answers 400 and returns false. */
bool api_parse_object(struct call *c, const char *const *allowed);
/* A new write of kind in c->op. */
struct jop *api_new_op(struct call *c, enum jop_kind kind);
/* How the prepare() of a charge or a refund starts: the body's fields
 * (api_parse_object), a new c->op of kind, and the merchant number that
 * names it (its out_trade_no; a refund's out_refund_no), also the log's
 * subject. NULL when it answered 400. */
struct jop *api_start_write(struct call *c, const char *const *allowed, enum jop_kind kind);
/* A string member: required or optional (absent: ""), at most max bytes,
 * checked by valid (may be NULL); on failure answers 400, returns false. */
bool api_get_string(struct call *c, const char *key, bool required, char *out, size_t max,
                    bool (*valid)(const char *s));
/* An integer amount in 1..AMOUNT_MAX; on failure answers 400. */
bool api_get_amount(struct call *c, const char *key, int64_t *out);
/* Answers 400 invalid_request at once (prepare stage). */
void api_bad_request(struct call *c, const char *message, const char *param);

/* Sets the answer (value's reference taken), or an error answer. */
void api_answer_json(struct call *c, int status, json_t *value);
void api_answer_error(struct call *c, int status, const char *code, const char *message,
                      const char *param);
void api_answer_raw(struct call *c, int status, const char *content_type, char *body,
                    size_t len);
/* Ends the request with the answer set, or without it (hang, lost answer). */
void api_deliver(struct call *c);
/* Answers a read and delivers it: value (200), or 500 when the journal
 * failed (value NULL). */
void api_answer_read(struct call *c, json_t *value);
/* Answers a query by a merchant number and delivers it: object (its JSON,
 * reference taken; NULL unless found is 1) when found (1), 404 "no <what>
 * with this <param>" (0), 500 (-1). */
void api_answer_found(struct call *c, int found, json_t *object, const char *what,
                      const char *param);
/* Answers c->op's result when it is one every write has: the charge or
 * refund (done now, or done before), or 500 when the journal failed
 * ("nothing was <undone>"). False for the other results, left to the
 * caller. */
bool api_answer_written(struct call *c, const char *undone);

/* The route handlers. */
bool charges_prepare_create(struct call *c);
void charges_render_create(struct call *c);
bool charges_prepare_close(struct call *c);
void charges_render_close(struct call *c);
void charges_get(struct call *c);
bool refunds_prepare_create(struct call *c);
void refunds_render_create(struct call *c);
void refunds_get(struct call *c);
bool statements_prepare(struct call *c);
void statements_get(struct call *c);
void control_faults_get(struct call *c);
bool control_faults_prepare_put(struct call *c);
void control_faults_put(struct call *c);
void control_journal(struct call *c);
void control_notifications(struct call *c);
void control_health(struct call *c);

#endif
