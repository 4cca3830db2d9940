/*
 * nats.c - the payment queue on NATS JetStream (cluster mode); see queue.h.
 *
 * The order API never talks to the broker: it commits the payment and its
 * outbox row in one transaction, as in embedded mode. Two threads do the
 * rest:
 *
 *   relay   (instances that accept payments) claims due outbox rows,
 *           publishes each to the stream PAYD with the payment id as
 *           Nats-Msg-Id and waits for the broker's acknowledgement. The
 *           claim is the mark: it counts the publish and makes the row due
 *           again, and a row the broker did not take is released (due at
 *           once). A row stays until its payment is final (a trigger
 *           deletes it then), so one still there when it is due again is
 *           published again. Its first claim holds it for
 *           RELAY_FIRST_LEASE_MS (an instance that died between claim and
 *           publish delays it no longer than that; a payment still
 *           processing then is published again, which the broker drops as a
 *           repeat of a message id it remembers); later claims for
 *           sweep_after_ms (the sweep): a message the broker lost (NATS 2.9
 *           acknowledges a publish before its data reach the disk) delays a
 *           payment and never loses it. Most rows are written once: a
 *           separate "sent" mark was a second update of every row, whose
 *           row locks queued behind the workers' outcomes that delete the
 *           same rows (bench/RESULTS.md, 2026-11-29).
 *   fetcher (worker instances) pulls messages from the durable consumer
 *           payd-workers into a bounded ring; workers take them in next(),
 *           each reading its payment from the store.
 *
 * Workers acknowledge a message only after its outcome is committed;
 * retry() and defer() are negative acknowledgements with a delay, kept by
 * the broker (so a deferral counts as a delivery here, unlike the outbox
 * backend: a deferred payment only queries before charging, which is the
 * safe side). A message delivered max_deliver times stops being delivered;
 * the broker's advisory of it is kept in the stream PAYD_DEAD, and the
 * sweeper sends the payment again later.
 */
#include <nats/nats.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/log.h"
#include "queue/queue.h"
#include "util/util.h"

#define STREAM "PAYD"
#define SUBJECT "payd.pay"
#define CONSUMER "payd-workers"
#define DEAD_STREAM "PAYD_DEAD"
#define DEAD_SUBJECT "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." STREAM "." CONSUMER
#define RELAY_BATCH 256
#define RELAY_IDLE_MS 1000        /* the relay looks for rows at least this often */
#define RELAY_FIRST_LEASE_MS 5000 /* a row claimed for the first time */
#define FETCH_WAIT_MS 1000
#define IDLE_FETCHES_CHECK 3 /* empty fetches before asking whether the consumer exists */
#define PUBLISH_WAIT_MS 2000
#define NS_PER_MS 1000000LL

struct nats_queue {
    queue base;
    store *store;
    struct queue_nats_options opts;
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    natsSubscription **old_subs; /* replaced by recover() */
    int old_sub_count;
    pthread_mutex_t mu;
    pthread_cond_t has_msgs; /* workers wait here */
    pthread_cond_t wake;     /* the relay and the fetcher wait here */
    natsMsg **ring;
    int ring_cap, ring_head, ring_len;
    bool notified, stopping;
    pthread_t relay, fetcher;
    bool relay_started, fetcher_started;
};

static void log_nats(const char *what, natsStatus s, jsErrCode jerr)
{
    char code[16];
    snprintf(code, sizeof(code), "%d", (int)jerr);
    log_error("nats", "what", what, "error", natsStatus_GetText(s), "js_code", code, NULL);
}

/* Waits on q->wake up to ms (or until notified); called with mu held. */
static void nap_locked(struct nats_queue *q, int64_t ms)
{
    if (q->notified || q->stopping)
        return;
    struct timespec ts;
    clock_deadline(ms, &ts);
    pthread_cond_timedwait(&q->wake, &q->mu, &ts);
}

static natsStatus ensure_streams(struct nats_queue *q, jsErrCode *jerr);
static natsStatus subscribe(struct nats_queue *q, jsErrCode *jerr);

/* After the broker lost its state (its data deleted, a new server), the
 * streams and the consumer are made again, at most once a second. */
static void recover(struct nats_queue *q, int64_t *last_ms, bool consumer)
{
    int64_t now = clock_mono_ms();
    if (now - *last_ms < 1000)
        return;
    *last_ms = now;
    jsErrCode jerr = 0;
    natsStatus s = ensure_streams(q, &jerr);
    if (s == NATS_OK && consumer) {
        /* Messages the workers hold refer to the old subscription: it is
         * kept until the end. */
        q->old_subs = xrealloc(q->old_subs, (size_t)(q->old_sub_count + 1) * sizeof(*q->old_subs));
        q->old_subs[q->old_sub_count++] = q->sub;
        q->sub = NULL;
        s = subscribe(q, &jerr);
    }
    if (s != NATS_OK)
        log_nats(consumer ? "recover_consumer" : "recover_streams", s, jerr);
}

/* ---- relay ---- */

/* Publishes one claimed row; true when the broker has it. */
static bool publish(struct nats_queue *q, const struct outbox_msg *m)
{
    char data[2 * ID_MAX + 24];
    /* the third field: how many times the row was published, this one
     * included, so a resent copy is never taken for a first delivery */
    int len = snprintf(data, sizeof(data), "%s %s %lld", m->payment_id, m->payment.merchant_id,
                       (long long)m->deliveries);
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MsgId = m->payment_id;
    po.MaxWait = PUBLISH_WAIT_MS;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_Publish(&ack, q->js, SUBJECT, data, len, &po, &jerr);
    jsPubAck_Destroy(ack);
    if (s != NATS_OK) {
        log_nats("publish", s, jerr);
        return false;
    }
    return true;
}

enum { RELAY_STORE_FAILED = -1, RELAY_BROKER_FAILED = -2 };

/* One round: claims due rows and publishes them; the rows the broker did
 * not take are due again at once. Returns how many were claimed, or a
 * RELAY_*_FAILED. */
static int relay_round(struct nats_queue *q, struct outbox_msg *msgs, int64_t *unsent_ids)
{
    struct store_op op = {.kind = STORE_OP_RELAY_CLAIM};
    op.in.outbox_claim.max = RELAY_BATCH;
    op.in.outbox_claim.first_lease_ms = RELAY_FIRST_LEASE_MS;
    op.in.outbox_claim.lease_ms = q->opts.sweep_after_ms;
    op.in.outbox_claim.msgs = msgs;
    if (store_exec(q->store, &op, 1000) != STORE_OK)
        return RELAY_STORE_FAILED;
    int n = op.out.claimed, sent = 0, resent = 0;
    for (; sent < n && publish(q, &msgs[sent]); sent++)
        resent += msgs[sent].deliveries > 2; /* the second is the first lease's end */
    if (resent > 0) {
        char count[24];
        snprintf(count, sizeof(count), "%d", resent);
        log_warn("relay_sweep", "resent", count, NULL);
    }
    if (sent == n)
        return n;
    /* the broker is away: what it did not take waits for the next round */
    for (int i = sent; i < n; i++)
        unsent_ids[i - sent] = msgs[i].id;
    struct store_op release = {.kind = STORE_OP_RELAY_RELEASE};
    release.in.outbox_ack.count = n - sent;
    release.in.outbox_ack.ids = unsent_ids;
    /* not released: due again when the claim's lease ends */
    if (store_exec(q->store, &release, 1000) != STORE_OK)
        log_warn("relay_release_failed", NULL);
    return RELAY_BROKER_FAILED;
}

static void *relay_main(void *arg)
{
    struct nats_queue *q = arg;
    pthread_setname_np(pthread_self(), "payd-relay");
    int64_t recovered_ms = 0;
    struct outbox_msg *msgs = xcalloc(RELAY_BATCH, sizeof(*msgs));
    int64_t *ids = xcalloc(RELAY_BATCH, sizeof(*ids));
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        q->notified = false;
        pthread_mutex_unlock(&q->mu);
        int n = relay_round(q, msgs, ids);
        if (n == RELAY_BROKER_FAILED)
            recover(q, &recovered_ms, false);
        pthread_mutex_lock(&q->mu);
        if (n == RELAY_BATCH)
            continue; /* there may be more */
        nap_locked(q, n < 0 ? 200 : RELAY_IDLE_MS);
    }
    pthread_mutex_unlock(&q->mu);
    free(ids);
    free(msgs);
    return NULL;
}

/* ---- consumer ---- */

/* False only when the broker says the consumer (or its stream) is gone. */
static bool consumer_exists(struct nats_queue *q)
{
    jsConsumerInfo *ci = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetConsumerInfo(&ci, q->js, STREAM, CONSUMER, NULL, &jerr);
    jsConsumerInfo_Destroy(ci);
    return !(s == NATS_NOT_FOUND || jerr == JSConsumerNotFoundErr || jerr == JSStreamNotFoundErr);
}

static void *fetcher_main(void *arg)
{
    struct nats_queue *q = arg;
    pthread_setname_np(pthread_self(), "payd-fetch");
    int64_t recovered_ms = 0;
    int idle = 0;
    pthread_mutex_lock(&q->mu);
    while (!q->stopping) {
        int space = q->ring_cap - q->ring_len;
        if (space == 0) {
            pthread_cond_wait(&q->wake, &q->mu);
            continue;
        }
        pthread_mutex_unlock(&q->mu);
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = q->sub ? natsSubscription_Fetch(&list, q->sub, space, FETCH_WAIT_MS,
                                                       &jerr)
                              : NATS_INVALID_SUBSCRIPTION;
        if (s != NATS_OK && s != NATS_TIMEOUT) {
            log_nats("fetch", s, jerr);
            sleep_ms(200);
            if (!q->sub || !consumer_exists(q))
                recover(q, &recovered_ms, true);
        }
        /* A broker that lost its state answers a pull for a consumer it
         * no longer has with silence: after a few empty fetches, look. */
        idle = s == NATS_TIMEOUT ? idle + 1 : 0;
        if (idle >= IDLE_FETCHES_CHECK) {
            idle = 0;
            if (!consumer_exists(q))
                recover(q, &recovered_ms, true);
        }
        pthread_mutex_lock(&q->mu);
        for (int i = 0; i < list.Count; i++) {
            PAYD_ASSERT(q->ring_len < q->ring_cap);
            q->ring[(q->ring_head + q->ring_len) % q->ring_cap] = list.Msgs[i];
            q->ring_len++;
            list.Msgs[i] = NULL; /* the ring owns it now */
            pthread_cond_signal(&q->has_msgs);
        }
        pthread_mutex_unlock(&q->mu);
        natsMsgList_Destroy(&list);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Fills out from a delivered message: "<payment id> <merchant id>", its
 * delivery count, and the payment as the store has it now. -1 when the
 * payment cannot be read now (the message is handed back). */
static int unpack(struct nats_queue *q, natsMsg *msg, struct queue_msg *out)
{
    memset(out, 0, sizeof(*out));
    out->handle = msg;
    char data[2 * ID_MAX + 24], merchant[ID_MAX] = "";
    int len = natsMsg_GetDataLength(msg);
    if (len <= 0 || len >= (int)sizeof(data))
        len = 0;
    memcpy(data, natsMsg_GetData(msg), (size_t)len);
    data[len] = '\0';
    /* "<payment id> <merchant id> <times published>" */
    char *save = NULL;
    const char *id = strtok_r(data, " ", &save);
    const char *mid = id ? strtok_r(NULL, " ", &save) : NULL;
    const char *pubs = mid ? strtok_r(NULL, " ", &save) : NULL;
    long long published = pubs ? strtoll(pubs, NULL, 10) : 0;
    bool ok = id && mid && strlen(id) < ID_MAX && strlen(mid) < ID_MAX;
    if (ok) {
        snprintf(out->payment_id, sizeof(out->payment_id), "%s", id);
        snprintf(merchant, sizeof(merchant), "%s", mid);
    }
    if (!ok) {
        log_error("nats_bad_message", "data", data, NULL);
        return 0; /* found = false: acknowledged and dropped by the worker */
    }
    jsMsgMetaData *meta = NULL;
    if (natsMsg_GetMetaData(&meta, msg) == NATS_OK && published >= 1) {
        out->id = (int64_t)meta->Sequence.Stream;
        /* deliveries of earlier copies count: only the first delivery of
         * the first copy charges without asking the channel first */
        out->deliveries = (int64_t)meta->NumDelivered + published - 1;
    } else {
        out->deliveries = 2; /* unknown: taken for a redelivery, which queries first */
    }
    if (meta)
        jsMsgMetaData_Destroy(meta);
    int rc = store_payment_get(q->store, merchant, out->payment_id, &out->payment);
    if (rc == STORE_E_IO)
        return -1;
    out->found = rc == STORE_OK;
    return 0;
}

static int nats_next(queue *base, struct queue_msg *out, int64_t wait_ms)
{
    struct nats_queue *q = (struct nats_queue *)base;
    struct timespec ts;
    clock_deadline(wait_ms, &ts);
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (q->ring_len == 0 && !q->stopping) {
            if (pthread_cond_timedwait(&q->has_msgs, &q->mu, &ts) != 0 && q->ring_len == 0) {
                pthread_mutex_unlock(&q->mu);
                return QUEUE_E_EMPTY;
            }
        }
        if (q->stopping) {
            pthread_mutex_unlock(&q->mu);
            return QUEUE_E_STOPPED;
        }
        natsMsg *msg = q->ring[q->ring_head];
        q->ring_head = (q->ring_head + 1) % q->ring_cap;
        q->ring_len--;
        pthread_cond_broadcast(&q->wake); /* room to fetch more (the relay waits there too) */
        pthread_mutex_unlock(&q->mu);
        if (unpack(q, msg, out) == 0)
            return QUEUE_OK;
        natsMsg_NakWithDelay(msg, 1000, NULL); /* the store is away: later */
        natsMsg_Destroy(msg);
        pthread_mutex_lock(&q->mu);
    }
}

static int nats_ack(queue *base, const struct queue_msg *m)
{
    (void)base;
    natsStatus s = natsMsg_Ack(m->handle, NULL);
    natsMsg_Destroy(m->handle);
    /* a lost acknowledgement means one more delivery, handled idempotently */
    return s == NATS_OK ? QUEUE_OK : QUEUE_E_IO;
}

static int nats_retry(queue *base, const struct queue_msg *m, int64_t delay_ms)
{
    (void)base;
    natsStatus s = natsMsg_NakWithDelay(m->handle, delay_ms, NULL);
    natsMsg_Destroy(m->handle);
    return s == NATS_OK ? QUEUE_OK : QUEUE_E_IO;
}

static void nats_notify(queue *base)
{
    struct nats_queue *q = (struct nats_queue *)base;
    pthread_mutex_lock(&q->mu);
    q->notified = true;
    pthread_cond_broadcast(&q->wake);
    pthread_mutex_unlock(&q->mu);
}

static void nats_stop(queue *base)
{
    struct nats_queue *q = (struct nats_queue *)base;
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_broadcast(&q->wake);
    pthread_cond_broadcast(&q->has_msgs);
    pthread_mutex_unlock(&q->mu);
}

static void nats_free(queue *base)
{
    struct nats_queue *q = (struct nats_queue *)base;
    nats_stop(base);
    if (q->relay_started)
        pthread_join(q->relay, NULL);
    if (q->fetcher_started)
        pthread_join(q->fetcher, NULL);
    /* messages fetched and never taken come again after their ack wait */
    for (int i = 0; i < q->ring_len; i++)
        natsMsg_Destroy(q->ring[(q->ring_head + i) % q->ring_cap]);
    natsSubscription_Destroy(q->sub);
    for (int i = 0; i < q->old_sub_count; i++)
        natsSubscription_Destroy(q->old_subs[i]);
    free(q->old_subs);
    jsCtx_Destroy(q->js);
    natsConnection_Destroy(q->nc);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->has_msgs);
    pthread_cond_destroy(&q->wake);
    free(q->ring);
    free(q);
}

static const struct queue_backend nats_backend = {
    .name = "nats",
    .next = nats_next,
    .ack = nats_ack,
    .retry = nats_retry,
    .defer = nats_retry,
    .notify = nats_notify,
    .stop = nats_stop,
    .free = nats_free,
};

/* ---- set-up ---- */

/* Creates the stream, or updates it to this configuration. */
static natsStatus ensure_stream(jsCtx *js, const char *name, const char *subject,
                                jsRetentionPolicy retention, int replicas, jsErrCode *jerr)
{
    jsStreamConfig cfg;
    jsStreamConfig_Init(&cfg);
    const char *subjects[] = {subject};
    cfg.Name = name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Retention = retention;
    cfg.Storage = js_FileStorage;
    cfg.Replicas = replicas;
    natsStatus s = NATS_ERR;
    /* Instances starting together race to create it: the loser is told the
     * name exists or (while the winner's is being made) that its subject
     * overlaps one; then the stream is there to update. */
    for (int attempt = 0; attempt < 10; attempt++) {
        jsStreamInfo *si = NULL;
        *jerr = 0;
        s = js_AddStream(&si, js, &cfg, NULL, jerr);
        jsStreamInfo_Destroy(si);
        if (s == NATS_OK)
            return s;
        if (*jerr == JSStreamNameExistErr || *jerr == JSStreamSubjectOverlapErr) {
            si = NULL;
            *jerr = 0;
            s = js_UpdateStream(&si, js, &cfg, NULL, jerr);
            jsStreamInfo_Destroy(si);
            if (s == NATS_OK)
                return s;
        }
        sleep_ms(50 * (attempt + 1));
    }
    return s;
}

static natsStatus ensure_streams(struct nats_queue *q, jsErrCode *jerr)
{
    natsStatus s = ensure_stream(q->js, STREAM, SUBJECT, js_WorkQueuePolicy, q->opts.replicas,
                                 jerr);
    if (s == NATS_OK)
        s = ensure_stream(q->js, DEAD_STREAM, DEAD_SUBJECT, js_LimitsPolicy, q->opts.replicas,
                          jerr);
    return s;
}

/* The durable pull consumer the workers share. */
static natsStatus subscribe(struct nats_queue *q, jsErrCode *jerr)
{
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Config.Durable = CONSUMER;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = q->opts.ack_wait_ms * NS_PER_MS;
    so.Config.MaxDeliver = q->opts.max_deliver;
    so.Config.MaxAckPending = 65536;
    return js_PullSubscribe(&q->sub, q->js, SUBJECT, CONSUMER, NULL, &so, jerr);
}

/* How long start-up keeps trying to set up the streams and the consumer: a
 * JetStream cluster that has just started (or a machine busy enough) can
 * take longer than one request's timeout to elect the leaders of a new
 * stream or consumer; CI saw "NATS consumer payd-workers: Timeout" once
 * while three servers and four instances started together. */
#define SETUP_TRY_MS 30000
#define SETUP_PAUSE_MS 500

/* Runs setup (ensure_streams or subscribe) until it succeeds or
 * SETUP_TRY_MS have passed, logging each failure it tries again after. */
static natsStatus setup_with_retries(struct nats_queue *q, const char *what,
                                     natsStatus (*setup)(struct nats_queue *, jsErrCode *),
                                     jsErrCode *jerr)
{
    int64_t deadline = clock_mono_ms() + SETUP_TRY_MS;
    for (;;) {
        *jerr = 0;
        natsStatus st = setup(q, jerr);
        if (st == NATS_OK || clock_mono_ms() + SETUP_PAUSE_MS >= deadline)
            return st;
        char code[16];
        snprintf(code, sizeof(code), "%d", (int)*jerr);
        log_warn("nats_setup_retry", "what", what, "error", natsStatus_GetText(st), "js_code",
                 code, NULL);
        sleep_ms(SETUP_PAUSE_MS);
    }
}

/* Splits "a,b,c" into up to max server URLs (pointers into buf). */
static int split_urls(char *buf, const char **out, int max)
{
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ", ", &save); t && n < max; t = strtok_r(NULL, ", ", &save))
        out[n++] = t;
    return n;
}

queue *queue_nats_new(store *s, const struct queue_nats_options *opts, char *err,
                      size_t err_size)
{
    struct nats_queue *q = xcalloc(1, sizeof(*q));
    q->base.be = &nats_backend;
    q->store = s;
    q->opts = *opts;
    q->opts.urls = NULL; /* not kept */
    q->ring_cap = opts->prefetch > 0 ? opts->prefetch : 64;
    q->ring = xcalloc((size_t)q->ring_cap, sizeof(*q->ring));
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->has_msgs, NULL);
    pthread_cond_init(&q->wake, NULL);

    char *urls = xstrdup(opts->urls);
    const char *servers[16];
    int count = split_urls(urls, servers, 16);
    natsOptions *no = NULL;
    natsStatus st = natsOptions_Create(&no);
    if (st == NATS_OK)
        st = natsOptions_SetServers(no, servers, count);
    if (st == NATS_OK)
        st = natsOptions_SetMaxReconnect(no, -1); /* forever: the outbox waits meanwhile */
    if (st == NATS_OK)
        st = natsOptions_SetReconnectWait(no, 200);
    if (st == NATS_OK)
        st = natsOptions_SetTimeout(no, 2000);
    if (st == NATS_OK)
        st = natsConnection_Connect(&q->nc, no);
    natsOptions_Destroy(no);
    free(urls);
    if (st != NATS_OK) {
        snprintf(err, err_size, "queue: cannot connect to NATS at %s: %s", opts->urls,
                 natsStatus_GetText(st));
        goto out_fail;
    }
    jsErrCode jerr = 0;
    st = natsConnection_JetStream(&q->js, q->nc, NULL);
    if (st == NATS_OK)
        st = setup_with_retries(q, "streams", ensure_streams, &jerr);
    if (st != NATS_OK) {
        snprintf(err, err_size, "queue: NATS JetStream streams: %s (code %d)",
                 natsStatus_GetText(st), (int)jerr);
        goto out_fail;
    }
    if (opts->consume) {
        st = setup_with_retries(q, "consumer", subscribe, &jerr);
        if (st != NATS_OK) {
            snprintf(err, err_size, "queue: NATS consumer %s: %s (code %d)", CONSUMER,
                     natsStatus_GetText(st), (int)jerr);
            goto out_fail;
        }
        if (pthread_create(&q->fetcher, NULL, fetcher_main, q) != 0) {
            snprintf(err, err_size, "queue: cannot start the fetch thread");
            goto out_fail;
        }
        q->fetcher_started = true;
    }
    if (opts->relay) {
        if (pthread_create(&q->relay, NULL, relay_main, q) != 0) {
            snprintf(err, err_size, "queue: cannot start the relay thread");
            goto out_fail;
        }
        q->relay_started = true;
    }
    return &q->base;

out_fail:
    nats_free(&q->base);
    return NULL;
}
