/*
 * conf.h - configuration: defaults, then an INI file, then PAYD_* environment
 * variables, then command-line flags.
 *
 * Every key is one row of a table in conf.c, which gives its section, name,
 * type, bounds and default; parsing the file, reading the environment and
 * documenting the keys all walk that table. Unknown sections or keys and bad
 * values stop start-up with a message naming the key.
 */
#ifndef PAYD_CONF_H
#define PAYD_CONF_H

#include <stdbool.h>
#include <stdint.h>

#define CONF_CHANNELS_MAX 16
#define CONF_ALERTS_MAX 32
#define CONF_PATH_MAX 1024
#define CONF_METHODS_MAX 16
#define CONF_ERR_MAX 512

enum log_format { LOG_FORMAT_JSON, LOG_FORMAT_TEXT };
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum channel_type { CHANNEL_TYPE_SANDBOX, CHANNEL_TYPE_HTTP };

struct conf_channel {
    char name[33];
    int64_t type; /* enum channel_type */
    int64_t timeout_ms;
    double rate;               /* calls/s through the pacer; 0: unpaced */
    int64_t pace_max_wait_ms;  /* longest a call waits for its slot */
    char fallback[33];         /* another channel's name, or "" */
    char journal[CONF_PATH_MAX]; /* sandbox: its journal file; "": in the data directory */
    char url[CONF_PATH_MAX];     /* http: the PSP's base URL */
    char secret[129];            /* http: the key requests are signed with; never logged */
    char notify_url[CONF_PATH_MAX]; /* http: where the PSP sends its notifications; "": none */
    char methods[CONF_METHODS_MAX * 33]; /* http: the PSP's payment methods, comma-separated */
};

/* What an alert rule watches (see obs/alerts.h). */
enum alert_kind {
    ALERT_ERROR_RATIO,      /* share of 5xx among /v1 requests over window_s */
    ALERT_LATENCY_P99,      /* p99 of /v1 requests over window_s, seconds */
    ALERT_BREAKER_OPEN,     /* a channel's breaker is open (one alert per channel) */
    ALERT_QUEUE_AGE,        /* the oldest queued payment message, seconds */
    ALERT_DEAD_LETTERS,     /* messages past [worker] max_attempts */
    ALERT_LEDGER_IMBALANCE, /* the ledger's sum, minor units */
    ALERT_BURN_RATE,        /* error-budget burn over window_s and short_window_s */
    ALERT_KIND_COUNT
};
enum alert_severity { ALERT_SEVERITY_PAGE, ALERT_SEVERITY_TICKET, ALERT_SEVERITY_INFO };

/* An [alert.NAME] section: a built-in rule (conf_defaults) or the file's. */
struct conf_alert {
    char name[64];
    int64_t kind; /* enum alert_kind; -1 until set */
    double threshold;
    int64_t for_s;          /* the condition must hold this long to fire */
    int64_t window_s;       /* ratio and latency: the window; burn_rate: the long one */
    int64_t short_window_s; /* burn_rate only */
    double slo;             /* burn_rate only: the availability objective */
    int64_t min_requests;   /* ratio, latency, burn_rate: fewer in the window judge nothing */
    int64_t severity;       /* enum alert_severity */
    int64_t enabled;        /* 0 off, 1 on */
    char summary[256];      /* "": a summary made from the rule */
};

enum store_backend_kind { STORE_BACKEND_SQLITE, STORE_BACKEND_POSTGRES };
enum lock_backend_kind { LOCK_BACKEND_LOCAL, LOCK_BACKEND_REDIS };
enum queue_backend_kind { QUEUE_BACKEND_OUTBOX, QUEUE_BACKEND_NATS };

/* [server] roles, as bits */
#define ROLE_API 1    /* the order service: the HTTP API */
#define ROLE_WORKER 2 /* the payment service: consumes the queue, calls channels */

struct conf {
    /* [server] */
    char listen[128];
    char data_dir[CONF_PATH_MAX];
    int64_t max_body_bytes;
    int64_t http_threads;
    char admin_key[129]; /* "" : /admin/ only from loopback */
    char roles_text[32]; /* as written; conf_finish parses it into roles */
    int roles;           /* ROLE_* bits */
    /* [lock] */
    int64_t lock_backend; /* enum lock_backend_kind */
    char lock_url[CONF_PATH_MAX];
    /* [queue] */
    int64_t queue_backend; /* enum queue_backend_kind */
    char queue_url[CONF_PATH_MAX];
    int64_t queue_max_deliver;
    int64_t queue_replicas;
    int64_t queue_sweep_after_ms;
    /* [limits] */
    double merchant_rps; /* 0: off */
    int64_t merchant_burst; /* 0: the rate */
    double global_rps;
    int64_t global_burst;
    int64_t adaptive; /* 0 off, 1 on */
    int64_t max_inflight;
    double adaptive_tolerance;
    /* [breaker] */
    int64_t breaker_window_s;
    int64_t breaker_min_calls;
    double breaker_failure_ratio;
    int64_t breaker_slow_call_ms;
    double breaker_slow_ratio;
    int64_t breaker_open_s;
    int64_t breaker_half_open_calls;
    /* [store] */
    int64_t store_backend; /* enum store_backend_kind */
    char store_url[CONF_PATH_MAX]; /* postgres: libpq connection string; may hold a password */
    int64_t store_pool_size;
    int64_t store_writers;
    int64_t store_max_batch;
    int64_t store_queue_capacity;
    /* [worker] */
    int64_t worker_threads;
    int64_t worker_lease_ms;
    int64_t worker_max_attempts;
    int64_t worker_retry_base_ms;
    int64_t worker_retry_max_ms;
    /* [idempotency] */
    int64_t idem_ttl_s;
    int64_t order_ttl_s; /* unpaid orders close this long after creation; 0: never */
    int64_t order_close_interval_s;
    int64_t webhook_timeout_ms, webhook_retry_base_ms, webhook_retry_max_ms, webhook_give_up_s;
    int64_t webhook_allow_private; /* 0 off, 1 on: endpoints on loopback / private addresses */
    int64_t idem_purge_interval_s;
    /* [log] */
    int64_t log_format; /* enum log_format */
    int64_t log_level;  /* enum log_level */
    int64_t log_requests; /* 0 off, 1 on: one line per answered request */
    /* [alerts] */
    char alertmanager_url[CONF_PATH_MAX]; /* "": alerts are logged and shown only */
    int64_t alert_resend_s;
    int64_t ledger_check_s;
    /* [channel.NAME] */
    struct conf_channel channels[CONF_CHANNELS_MAX];
    int channel_count;
    /* [alert.NAME] */
    struct conf_alert alerts[CONF_ALERTS_MAX];
    int alert_count;
};

/* The name of an alert kind or severity, as the file writes it. */
const char *conf_alert_kind_name(int kind);
const char *conf_alert_severity_name(int severity);

/* Fills conf with the defaults (and the built-in alert rules). */
void conf_defaults(struct conf *conf);

/* Reads an INI file over conf. 0, or -1 with a message in err. */
int conf_load_file(struct conf *conf, const char *path, char err[CONF_ERR_MAX]);

/* Applies PAYD_<SECTION>_<KEY> variables from the environment. 0 or -1. */
int conf_load_env(struct conf *conf, char err[CONF_ERR_MAX]);

/* Sets one key by section and name, as a flag would. 0 or -1. */
int conf_set(struct conf *conf, const char *section, const char *key, const char *value,
             char err[CONF_ERR_MAX]);

/* Checks what single keys cannot (the listen address's form; at least one
 * channel, adding `sandbox` when none was configured; fallbacks name other
 * channels). 0 or -1. */
int conf_finish(struct conf *conf, char err[CONF_ERR_MAX]);

/* Splits conf->listen into host and port; 0 or -1. */
int conf_listen_split(const char *listen, char host[128], int *port);

#endif
