/*
 * alerts.h - the built-in alert rules ([alert.NAME]), judged every second
 * against the series of samples.
 *
 * Each rule has one instance (or one per channel, for breaker_open) that
 * moves through inactive -> pending -> firing -> inactive: pending while its
 * condition holds for less than for_s, firing after. Firing and resolving
 * are logged, shown on the dashboard, and, when [alerts] alertmanager_url is
 * set, pushed to it as Alertmanager's v2 API takes them (POST
 * /api/v2/alerts), a firing alert again every resend_s (with endsAt four
 * resends ahead, so Alertmanager resolves it by itself should payd die).
 * Pushes go out on a thread of their own: a slow Alertmanager never delays
 * the judging.
 */
#ifndef PAYD_OBS_ALERTS_H
#define PAYD_OBS_ALERTS_H

#include <jansson.h>
#include <stdint.h>

#include "conf.h"
#include "obs/series.h"

typedef struct alerts alerts;

enum alert_state { ALERT_INACTIVE, ALERT_PENDING, ALERT_FIRING };

/* The transition function: the state after one judgement of a rule whose
 * condition is cond, pending since pending_since_ms (for_ms to wait). */
enum alert_state alert_next_state(enum alert_state from, bool cond, int64_t pending_since_ms,
                                  int64_t now_ms, int64_t for_ms);

/* channel_names: channel_count names that outlive the handle; instance:
 * this payd's listen address (a label); NULL with a message in err when the
 * push cannot be set up. */
alerts *alerts_new(const struct conf *conf, const char *const *channel_names, int channel_count,
                   char *err, size_t err_size);
void alerts_free(alerts *a);

/* The longest window any enabled rule reads, in seconds. */
int64_t alerts_longest_window_s(const struct conf *conf);

/* Judges every rule at now_ms; logs and pushes what changed. */
void alerts_evaluate(alerts *a, series *s, int64_t now_ms);

/* Instances firing now. */
int alerts_firing(alerts *a);

/* The firing and pending instances, for the dashboard: an array of
 * {name, state, severity, labels, since_ms, summary}. */
json_t *alerts_active_json(alerts *a);

#endif
