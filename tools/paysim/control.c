/*
 * control.c - the control API (loopback clients only, unsigned, no faults):
 * the fault settings, the journal as witness, the notifications' delivery
 * state; and GET /healthz.
 */
#include <stdio.h>
#include <string.h>

#include "api_internal.h"
#include "log.h"

/* {"status":"ok","waiting":N,"held":M}: requests waiting out a latency and
 * connections held by a hang, so that a test can wait for a fault to be in
 * place without sleeping. */
void control_health(struct call *c)
{
    api_answer_read(c, json_pack("{s:s, s:i, s:i}", "status", "ok", "waiting",
                                 atomic_load(&c->api->waiting), "held",
                                 hold_count(c->api->cfg.holder)));
}

void control_faults_get(struct call *c)
{
    api_answer_read(c, faults_get_json(c->api->cfg.faults));
}

bool control_faults_prepare_put(struct call *c)
{
    size_t len;
    const char *body = http_body(c->r, &len);
    json_error_t jerr;
    c->in = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!c->in) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the body must be a JSON object: %s", jerr.text);
        srv_error(c->r, 400, "invalid_request", msg, NULL);
        return false;
    }
    return true;
}

void control_faults_put(struct call *c)
{
    char err[256], param[128];
    if (faults_set_json(c->api->cfg.faults, c->in, err, sizeof(err), param, sizeof(param)) != 0) {
        api_answer_error(c, 400, "invalid_request", err, param);
        api_deliver(c);
        return;
    }
    json_t *now = faults_get_json(c->api->cfg.faults);
    char *text = model_json_text(json_incref(now));
    log_line("faults set: %s", text);
    free(text);
    api_answer_read(c, now);
}

void control_journal(struct call *c)
{
    api_answer_read(c, journal_dump(c->api->cfg.journal, false));
}

void control_notifications(struct call *c)
{
    api_answer_read(c, journal_dump_notifications(c->api->cfg.journal));
}
