/*
 * store.c - backend selection and the synchronous helper; see store.h.
 */
#include "store/store.h"

#include <pthread.h>
#include <string.h>

#include "util/util.h"

extern const struct store_backend store_sqlite_backend;
extern const struct store_backend store_postgres_backend;

static const struct store_backend *const backends[] = {
    &store_sqlite_backend,
    &store_postgres_backend,
};

const char *store_rc_name(int rc)
{
    switch (rc) {
    case STORE_OK: return "ok";
    case STORE_E_NOT_FOUND: return "not_found";
    case STORE_E_EXISTS: return "exists";
    case STORE_E_REUSED: return "reused";
    case STORE_E_NOT_PAYABLE: return "not_payable";
    case STORE_E_IN_PROGRESS: return "in_progress";
    case STORE_E_STALE_FENCE: return "stale_fence";
    case STORE_E_IDEM_EXISTS: return "idem_exists";
    case STORE_E_FINAL: return "final";
    case STORE_E_BUSY: return "busy";
    case STORE_E_DUPLICATE: return "duplicate";
    case STORE_E_IO: return "io";
    case STORE_E_NOT_REFUNDABLE: return "not_refundable";
    case STORE_E_EXCEEDS: return "exceeds_refundable";
    case STORE_E_FULL: return "disk_full";
    default: return "unknown";
    }
}

const struct store_backend *store_backend_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_LEN(backends); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

store *store_open(const char *backend, const struct store_options *opts, char *err,
                  size_t err_size)
{
    const struct store_backend *be = store_backend_find(backend);
    if (!be) {
        snprintf(err, err_size, "store: unknown backend '%s'", backend);
        return NULL;
    }
    return be->open(opts, err, err_size);
}

void store_close(store *s)
{
    if (s)
        s->be->close(s);
}

int store_submit(store *s, struct store_op *op)
{
    op->submitted_us = clock_mono_us();
    return s->be->submit(s, op);
}

/* A thread waiting for one op's commit. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
};

static void waiter_done(struct store_op *op)
{
    struct waiter *w = op->arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

int store_exec(store *s, struct store_op *op, int64_t wait_busy_ms)
{
    struct waiter w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);
    op->done = waiter_done;
    op->arg = &w;
    int64_t deadline_ms = clock_mono_ms() + wait_busy_ms;
    int rc;
    while ((rc = store_submit(s, op)) == STORE_E_BUSY && clock_mono_ms() < deadline_ms)
        sleep_ms(5);
    if (rc == STORE_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cond, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = op->rc;
    } else {
        op->rc = rc;
    }
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.mu);
    return rc;
}
