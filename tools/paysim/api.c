/*
 * api.c - routes and the path of a request through the faults; see api.h.
 */
#include "api.h"

#include <stdio.h>
#include <string.h>

#include "api_internal.h"
#include "log.h"
#include "util/sign.h"
#include "util/util.h"

static const struct route routes[] = {
    {"POST", "/v1/charges", NULL, ACCESS_SIGNED, FAULT_CHARGE, charges_prepare_create, NULL,
     charges_render_create},
    {"POST", "/v1/charges/", "/close", ACCESS_SIGNED, FAULT_CHARGE, charges_prepare_close, NULL,
     charges_render_close},
    {"GET", "/v1/charges/", "", ACCESS_SIGNED, FAULT_QUERY, NULL, charges_get, NULL},
    {"POST", "/v1/refunds", NULL, ACCESS_SIGNED, FAULT_REFUND, refunds_prepare_create, NULL,
     refunds_render_create},
    {"GET", "/v1/refunds/", "", ACCESS_SIGNED, FAULT_QUERY, NULL, refunds_get, NULL},
    {"GET", "/v1/statements", NULL, ACCESS_SIGNED, FAULT_STATEMENT, statements_prepare,
     statements_get, NULL},
    {"GET", "/control/faults", NULL, ACCESS_CONTROL, 0, NULL, control_faults_get, NULL},
    {"PUT", "/control/faults", NULL, ACCESS_CONTROL, 0, control_faults_prepare_put,
     control_faults_put, NULL},
    {"GET", "/control/journal", NULL, ACCESS_CONTROL, 0, NULL, control_journal, NULL},
    {"GET", "/control/notifications", NULL, ACCESS_CONTROL, 0, NULL, control_notifications,
     NULL},
    {"GET", "/healthz", NULL, ACCESS_PUBLIC, 0, NULL, control_health, NULL},
};

api *api_new(const struct api_config *cfg)
{
    api *a = xcalloc(1, sizeof(*a));
    a->cfg = *cfg;
    atomic_init(&a->waiting, 0);
    return a;
}

void api_free(api *a)
{
    free(a);
}

/* ---- routing ---- */

/* Does path fit the route's pattern? The {param} is one non-empty segment. */
static bool path_matches(const struct route *rt, const char *path, char *param,
                         size_t param_size, bool *param_ok)
{
    size_t plen = strlen(rt->prefix);
    if (strncmp(path, rt->prefix, plen) != 0)
        return false;
    if (!rt->suffix)
        return path[plen] == '\0';
    const char *start = path + plen;
    const char *end = strchr(start, '/');
    if (!end)
        end = start + strlen(start);
    if (end == start || strcmp(end, rt->suffix) != 0)
        return false;
    size_t n = (size_t)(end - start);
    *param_ok = n < param_size;
    if (*param_ok) {
        memcpy(param, start, n);
        param[n] = '\0';
        *param_ok = model_out_no_valid(param);
    }
    return true;
}

static void call_free(void *p)
{
    struct call *c = p;
    json_decref(c->in);
    free(c->op);
    free(c->answer.body);
    free(c);
}

/* The call of a request, made in the head hook (or at dispatch when the
 * head hook did not see it). */
static struct call *call_of(api *a, http_req *r)
{
    struct call *c = http_user(r);
    if (c)
        return c;
    c = xcalloc(1, sizeof(*c));
    c->api = a;
    c->r = r;
    http_set_user(r, c, call_free);
    return c;
}

static void log_v1(struct call *c, const char *outcome)
{
    if (!c->route || c->route->access != ACCESS_SIGNED)
        return;
    double ms = (double)(clock_mono_us() - http_started_us(c->r)) / 1000.0;
    log_line("%s %s%s%s -> %s (%.1f ms)", http_method(c->r), http_path(c->r),
             c->subject[0] ? " " : "", c->subject, outcome, ms);
}

void api_head(void *app, http_req *r)
{
    api *a = app;
    struct call *c = call_of(a, r);
    const char *path = http_path(r);
    for (size_t i = 0; i < ARRAY_LEN(routes); i++) {
        bool param_ok = true;
        char param[OUT_NO_MAX + 1] = "";
        if (!path_matches(&routes[i], path, param, sizeof(param), &param_ok))
            continue;
        if (strcmp(routes[i].method, http_method(r)) != 0)
            continue;
        c->route = &routes[i];
        if (param_ok)
            snprintf(c->param, sizeof(c->param), "%s", param);
        snprintf(c->subject, sizeof(c->subject), "%s", c->param);
        break;
    }
    if (!c->route || c->route->access != ACCESS_SIGNED)
        return;
    enum fault_kind kind = c->route->kind;
    if (faults_outage(a->cfg.faults, kind)) {
        log_v1(c, "reset (outage)");
        srv_drop(r, true);
        return;
    }
    c->drawn = faults_draw(a->cfg.faults, kind, &c->draw);
    if (c->draw.reset) {
        log_v1(c, "reset (reset_rate)");
        srv_drop(r, true);
    }
}

/* ---- answers ---- */

void api_bad_request(struct call *c, const char *message, const char *param)
{
    log_v1(c, "400 invalid_request");
    srv_error(c->r, 400, "invalid_request", message, param);
}

void api_answer_raw(struct call *c, int status, const char *content_type, char *body,
                    size_t len)
{
    PAYD_ASSERT(!c->answer.body);
    c->answer = (struct held_answer){status, content_type, body, len};
}

void api_answer_json(struct call *c, int status, json_t *value)
{
    char *s = model_json_text(value);
    api_answer_raw(c, status, "application/json", s, strlen(s));
}

void api_answer_error(struct call *c, int status, const char *code, const char *message,
                      const char *param)
{
    api_answer_json(c, status, srv_error_json(code, message, param));
}

void api_answer_read(struct call *c, json_t *value)
{
    if (value)
        api_answer_json(c, 200, value);
    else
        api_answer_error(c, 500, "system_error", "paysim's journal failed", NULL);
    api_deliver(c);
}

void api_answer_found(struct call *c, int found, json_t *object, const char *what,
                      const char *param)
{
    if (found != 0) {
        api_answer_read(c, found > 0 ? object : NULL);
        return;
    }
    char msg[128];
    snprintf(msg, sizeof(msg), "no %s with this %s", what, param);
    api_answer_error(c, 404, "not_found", msg, param);
    api_deliver(c);
}

bool api_answer_written(struct call *c, const char *undone)
{
    struct jop *op = c->op;
    char msg[128];
    switch (op->result) {
    case JR_CREATED:
    case JR_EXISTING:
        api_answer_json(c, 200, op->kind == JOP_REFUND ? model_refund_json(&op->refund)
                                                       : model_charge_json(&op->charge));
        return true;
    case JR_ERROR:
        snprintf(msg, sizeof(msg), "paysim's journal failed; nothing was %s", undone);
        api_answer_error(c, 500, "system_error", msg, NULL);
        return true;
    default:
        return false;
    }
}

static void on_released(http_req *r)
{
    struct call *c = http_user(r);
    log_v1(c, "closed unanswered after hang");
    srv_drop(r, false);
}

static void release_held(void *arg)
{
    http_resume(arg);
}

void api_deliver(struct call *c)
{
    char outcome[64];
    if (c->draw.hang) {
        snprintf(outcome, sizeof(outcome), "%d held unanswered (hang)", c->answer.status);
        log_v1(c, outcome);
        int fd = srv_fd(c->r);
        http_suspend(c->r, on_released);
        hold_add(c->api->cfg.holder, fd, release_held, c->r);
        return;
    }
    if (c->draw.lost) {
        snprintf(outcome, sizeof(outcome), "%d closed unanswered (lost_answer)",
                 c->answer.status);
        log_v1(c, outcome);
        srv_drop(c->r, false);
        return;
    }
    snprintf(outcome, sizeof(outcome), "%d", c->answer.status);
    log_v1(c, outcome);
    struct held_answer a = c->answer;
    c->answer.body = NULL;
    http_respond_bytes(c->r, a.status, a.content_type, a.body, a.len);
}

/* ---- writes ---- */

static void on_written(http_req *r)
{
    struct call *c = http_user(r);
    c->route->render(c);
    api_deliver(c);
}

static void write_done(struct jop *op)
{
    http_resume(op->arg);
}

/* The route's work: a read, or c->op journaled, the request parked until
 * it is durable. */
static void work(struct call *c)
{
    if (c->route->read) {
        c->route->read(c);
        return;
    }
    PAYD_ASSERT(c->op);
    c->op->done = write_done;
    c->op->arg = c->r;
    http_suspend(c->r, on_written);
    journal_submit(c->api->cfg.journal, c->op);
}

/* ---- latency ---- */

static void on_latency_over(http_req *r)
{
    struct call *c = http_user(r);
    atomic_fetch_sub(&c->api->waiting, 1);
    if (c->cancelled) { /* paysim is stopping: nothing done */
        log_v1(c, "503 shutting_down");
        srv_error(r, 503, "shutting_down", "paysim is stopping; nothing was done", NULL);
        return;
    }
    work(c);
}

static void latency_over(void *arg, bool cancelled)
{
    http_req *r = arg;
    struct call *c = http_user(r);
    c->cancelled = cancelled;
    http_resume(r);
}

/* ---- dispatch ---- */

static bool verify_signature(struct call *c)
{
    size_t len;
    const char *body = http_body(c->r, &len);
    enum sign_check rc = sign_verify(c->api->cfg.secret, http_header(c->r, SIGN_HEADER_TIMESTAMP),
                                     http_header(c->r, SIGN_HEADER_SIGNATURE), body, len,
                                     clock_wall_ms() / 1000);
    const char *code = NULL, *message = NULL;
    switch (rc) {
    case SIGN_OK:
        return true;
    case SIGN_MISSING:
        code = "signature_missing";
        message = "Paysim-Timestamp and Paysim-Signature are required";
        break;
    case SIGN_MALFORMED:
        code = "signature_invalid";
        message = "Paysim-Timestamp must be Unix seconds and Paysim-Signature 64 hex digits";
        break;
    case SIGN_STALE:
        code = "timestamp_stale";
        message = "Paysim-Timestamp is more than 300 s away from paysim's clock";
        break;
    case SIGN_MISMATCH:
        code = "signature_invalid";
        message = "the signature does not match the body and timestamp";
        break;
    }
    char outcome[64];
    snprintf(outcome, sizeof(outcome), "401 %s", code);
    log_v1(c, outcome);
    srv_error(c->r, 401, code, message, NULL);
    return false;
}

static bool route_exists_for_path(const char *path)
{
    for (size_t i = 0; i < ARRAY_LEN(routes); i++) {
        char param[OUT_NO_MAX + 1];
        bool ok;
        if (path_matches(&routes[i], path, param, sizeof(param), &ok))
            return true;
    }
    return false;
}

void api_dispatch(void *app, http_req *r)
{
    api *a = app;
    struct call *c = call_of(a, r);
    const struct route *rt = c->route;
    if (!rt) {
        if (route_exists_for_path(http_path(r)))
            srv_error(r, 405, "method_not_allowed", "this path does not take this method",
                      NULL);
        else
            srv_error(r, 404, "not_found", "no such path", NULL);
        return;
    }
    if (rt->access == ACCESS_CONTROL && !http_peer_loopback(r)) {
        srv_error(r, 403, "forbidden", "the control API answers loopback clients only", NULL);
        return;
    }
    if (rt->access == ACCESS_SIGNED && !verify_signature(c))
        return;
    if (rt->suffix && !c->param[0]) {
        const char *name = strncmp(rt->prefix, "/v1/refunds", 11) == 0 ? "out_refund_no"
                                                                        : "out_trade_no";
        api_bad_request(c, "the number in the path must be 1 to 64 of A-Z a-z 0-9 _ - . :",
                        name);
        return;
    }
    if (rt->prepare && !rt->prepare(c))
        return;
    if (c->draw.error) {
        log_v1(c, "500 system_error (error_rate)");
        srv_error(r, 500, "system_error", "paysim failed (an injected error); nothing was done",
                  NULL);
        return;
    }
    if (c->draw.latency_ms > 0) {
        atomic_fetch_add(&a->waiting, 1);
        http_suspend(r, on_latency_over);
        timer_add(a->cfg.timer, c->draw.latency_ms, latency_over, r);
        return;
    }
    work(c);
}

/* ---- request bodies ---- */

bool api_parse_object(struct call *c, const char *const *allowed)
{
    size_t len;
    const char *body = http_body(c->r, &len);
    json_error_t jerr;
    c->in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!c->in || !json_is_object(c->in)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the body must be a JSON object%s%s", c->in ? "" : ": ",
                 c->in ? "" : jerr.text);
        api_bad_request(c, msg, NULL);
        return false;
    }
    const char *key;
    json_t *v;
    json_object_foreach(c->in, key, v) {
        bool known = false;
        for (size_t i = 0; allowed[i]; i++)
            known = known || strcmp(key, allowed[i]) == 0;
        if (!known) {
            char msg[160];
            snprintf(msg, sizeof(msg), "unknown field %.100s", key);
            api_bad_request(c, msg, key);
            return false;
        }
    }
    return true;
}

struct jop *api_new_op(struct call *c, enum jop_kind kind)
{
    PAYD_ASSERT(!c->op);
    c->op = xcalloc(1, sizeof(*c->op));
    c->op->kind = kind;
    return c->op;
}

struct jop *api_start_write(struct call *c, const char *const *allowed, enum jop_kind kind)
{
    if (!api_parse_object(c, allowed))
        return NULL;
    struct jop *op = api_new_op(c, kind);
    bool refund = kind == JOP_REFUND;
    char *no = refund ? op->refund.out_refund_no : op->charge.out_trade_no;
    if (!api_get_string(c, refund ? "out_refund_no" : "out_trade_no", true, no, OUT_NO_MAX,
                        model_out_no_valid))
        return NULL;
    snprintf(c->subject, sizeof(c->subject), "%s", no);
    return op;
}

bool api_get_string(struct call *c, const char *key, bool required, char *out, size_t max,
                    bool (*valid)(const char *s))
{
    const json_t *v = json_object_get(c->in, key);
    out[0] = '\0';
    char msg[128];
    if (!v || json_is_null(v)) {
        if (!required)
            return true;
        snprintf(msg, sizeof(msg), "%s is required", key);
        api_bad_request(c, msg, key);
        return false;
    }
    const char *s = json_string_value(v);
    if (!s || strlen(s) > max || strlen(s) != json_string_length(v) || (valid && !valid(s))) {
        snprintf(msg, sizeof(msg), "%s is not valid (docs/paysim.md gives its form)", key);
        api_bad_request(c, msg, key);
        return false;
    }
    memcpy(out, s, strlen(s) + 1);
    return true;
}

bool api_get_amount(struct call *c, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(c->in, key);
    if (!v || !json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > AMOUNT_MAX) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s must be an integer number of minor units from 1 to %lld",
                 key, (long long)AMOUNT_MAX);
        api_bad_request(c, msg, key);
        return false;
    }
    *out = json_integer_value(v);
    return true;
}
