/*
 * notifier.c - the delivery thread: libcurl's multi interface, up to
 * INFLIGHT_MAX deliveries at once; see notifier.h.
 *
 * Each round it loads the notifications due (the journal's next_ms has
 * passed) that are not already in flight, starts them, and waits in
 * curl_multi_poll() for an answer, a wake-up (notifier_wake) or the next
 * tick. A finished delivery is recorded through the journal thread before
 * its notification can be picked up again.
 */
#include "notifier.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "util/sign.h"
#include "util/util.h"

#define INFLIGHT_MAX 64
#define TICK_MS 100
#define ANSWER_MAX 64 /* bytes of the answer kept: enough to tell "success" */

struct delivery {
    struct notification n;
    CURL *easy;
    struct curl_slist *headers;
    char answer[ANSWER_MAX + 1];
    size_t answer_len;
    bool answer_too_long;
    int64_t at_ms;
};

struct notifier {
    journal *j;
    char *secret;
    int64_t delays_ms[NOTIFY_DELAYS_MAX];
    int delay_count;
    CURLM *multi;
    pthread_t thread;
    atomic_bool stopping;
    struct delivery *inflight[INFLIGHT_MAX];
    int inflight_count;
    /* journal results come back on the journal thread */
    pthread_mutex_t mu;
    pthread_cond_t cond;
};

static size_t on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    struct delivery *d = arg;
    size_t n = size * nmemb;
    size_t room = ANSWER_MAX - d->answer_len;
    if (n > room)
        d->answer_too_long = true;
    size_t take = n < room ? n : room;
    memcpy(d->answer + d->answer_len, data, take);
    d->answer_len += take;
    d->answer[d->answer_len] = '\0';
    return n;
}

static bool answer_is_success(const struct delivery *d)
{
    if (d->answer_too_long)
        return false;
    const char *s = d->answer, *e = d->answer + d->answer_len;
    while (s < e && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    return e - s == 7 && memcmp(s, "success", 7) == 0;
}

static void start_delivery(notifier *nf, struct notification *n)
{
    struct delivery *d = xcalloc(1, sizeof(*d));
    d->n = *n; /* takes the body */
    d->at_ms = clock_wall_ms();
    char ts[24], sig[SIGN_HEX_LEN + 1], line[128];
    snprintf(ts, sizeof(ts), "%lld", (long long)(d->at_ms / 1000));
    sign_compute(nf->secret, ts, d->n.body, strlen(d->n.body), sig);
    d->headers = curl_slist_append(d->headers, "Content-Type: application/json");
    snprintf(line, sizeof(line), "%s: %s", SIGN_HEADER_TIMESTAMP, ts);
    d->headers = curl_slist_append(d->headers, line);
    snprintf(line, sizeof(line), "%s: %s", SIGN_HEADER_SIGNATURE, sig);
    d->headers = curl_slist_append(d->headers, line);
    snprintf(line, sizeof(line), "Paysim-Notify-Id: %s", d->n.notify_id);
    d->headers = curl_slist_append(d->headers, line);
    d->headers = curl_slist_append(d->headers, "Expect:"); /* no 100-continue round trip */
    PAYD_ASSERT(d->headers);
    d->easy = curl_easy_init();
    PAYD_ASSERT(d->easy);
    curl_easy_setopt(d->easy, CURLOPT_URL, d->n.url);
    curl_easy_setopt(d->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(d->easy, CURLOPT_POSTFIELDS, d->n.body);
    curl_easy_setopt(d->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(d->n.body));
    curl_easy_setopt(d->easy, CURLOPT_HTTPHEADER, d->headers);
    curl_easy_setopt(d->easy, CURLOPT_TIMEOUT_MS, (long)NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(d->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(d->easy, CURLOPT_USERAGENT, "paysim/1");
    curl_easy_setopt(d->easy, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(d->easy, CURLOPT_WRITEDATA, d);
    curl_easy_setopt(d->easy, CURLOPT_PRIVATE, d);
    curl_easy_setopt(d->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_multi_add_handle(nf->multi, d->easy);
    PAYD_ASSERT(nf->inflight_count < INFLIGHT_MAX);
    nf->inflight[nf->inflight_count++] = d;
}

static void delivery_free(notifier *nf, struct delivery *d)
{
    curl_multi_remove_handle(nf->multi, d->easy);
    curl_easy_cleanup(d->easy);
    curl_slist_free_all(d->headers);
    journal_notification_clear(&d->n);
    free(d);
}

/* Waits on the notifier's own condition for one journal result. */
struct recorded {
    notifier *nf;
    bool done;
};

static void on_recorded(struct jop *op)
{
    struct recorded *rec = op->arg;
    pthread_mutex_lock(&rec->nf->mu);
    rec->done = true;
    pthread_cond_broadcast(&rec->nf->cond);
    pthread_mutex_unlock(&rec->nf->mu);
}

static void finish_delivery(notifier *nf, struct delivery *d, CURLcode res)
{
    long status = 0;
    curl_easy_getinfo(d->easy, CURLINFO_RESPONSE_CODE, &status);
    struct jop *op = xcalloc(1, sizeof(*op));
    op->kind = JOP_NOTIFY_RESULT;
    op->note.id = d->n.id;
    op->note.attempt = d->n.attempts + 1;
    op->note.at_ms = d->at_ms;
    op->note.http_status = res == CURLE_OK ? (int)status : 0;
    bool ok = res == CURLE_OK && status == 200 && answer_is_success(d);
    if (ok) {
        op->note.outcome = NOTIFY_DELIVERED;
    } else {
        if (res != CURLE_OK)
            snprintf(op->note.error, sizeof(op->note.error), "%s", curl_easy_strerror(res));
        else if (status != 200)
            snprintf(op->note.error, sizeof(op->note.error), "HTTP %ld", status);
        else
            snprintf(op->note.error, sizeof(op->note.error), "answer is not \"success\"");
        int failed = op->note.attempt; /* attempts made, all failed */
        if (failed <= nf->delay_count) {
            op->note.outcome = NOTIFY_RETRY;
            op->note.next_ms = clock_wall_ms() + nf->delays_ms[failed - 1];
        } else {
            op->note.outcome = NOTIFY_GAVE_UP;
        }
    }
    struct recorded rec = {.nf = nf};
    op->done = on_recorded;
    op->arg = &rec;
    journal_submit(nf->j, op);
    pthread_mutex_lock(&nf->mu);
    while (!rec.done)
        pthread_cond_wait(&nf->cond, &nf->mu);
    pthread_mutex_unlock(&nf->mu);
    if (op->result == JR_ERROR)
        log_line("notify %s: the attempt could not be recorded; it will be made again",
                 d->n.notify_id);
    else if (ok)
        log_line("notify %s %s -> %s: delivered (attempt %d)", d->n.notify_id, d->n.event,
                 d->n.url, op->note.attempt);
    else
        log_line("notify %s %s -> %s: attempt %d failed (%s)%s", d->n.notify_id, d->n.event,
                 d->n.url, op->note.attempt, op->note.error,
                 op->note.outcome == NOTIFY_GAVE_UP ? "; given up" : "");
    free(op);
    delivery_free(nf, d);
}

static void *notifier_main(void *arg)
{
    notifier *nf = arg;
    struct notification due[INFLIGHT_MAX];
    int64_t skip[INFLIGHT_MAX];
    while (!atomic_load(&nf->stopping)) {
        int room = INFLIGHT_MAX - nf->inflight_count;
        if (room > 0) {
            for (int i = 0; i < nf->inflight_count; i++)
                skip[i] = nf->inflight[i]->n.id;
            int n = journal_due_notifications(nf->j, clock_wall_ms(), skip, nf->inflight_count,
                                              due, room);
            for (int i = 0; i < n; i++)
                start_delivery(nf, &due[i]);
        }
        int running = 0;
        curl_multi_perform(nf->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(nf->multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct delivery *d = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&d);
            CURLcode res = msg->data.result;
            for (int i = 0; i < nf->inflight_count; i++)
                if (nf->inflight[i] == d) {
                    nf->inflight[i] = nf->inflight[--nf->inflight_count];
                    break;
                }
            finish_delivery(nf, d, res);
        }
        curl_multi_poll(nf->multi, NULL, 0, TICK_MS, NULL);
    }
    for (int i = 0; i < nf->inflight_count; i++)
        delivery_free(nf, nf->inflight[i]);
    nf->inflight_count = 0;
    return NULL;
}

notifier *notifier_start(journal *j, const char *secret, const int64_t *delays_ms,
                         int delay_count)
{
    PAYD_ASSERT(delay_count >= 0 && delay_count <= NOTIFY_DELAYS_MAX);
    notifier *nf = xcalloc(1, sizeof(*nf));
    nf->j = j;
    nf->secret = xstrdup(secret);
    for (int i = 0; i < delay_count; i++)
        nf->delays_ms[i] = delays_ms[i];
    nf->delay_count = delay_count;
    nf->multi = curl_multi_init();
    PAYD_ASSERT(nf->multi);
    pthread_mutex_init(&nf->mu, NULL);
    pthread_cond_init(&nf->cond, NULL);
    atomic_init(&nf->stopping, false);
    PAYD_ASSERT(pthread_create(&nf->thread, NULL, notifier_main, nf) == 0);
    return nf;
}

void notifier_wake(void *arg)
{
    notifier *nf = arg;
    curl_multi_wakeup(nf->multi);
}

void notifier_stop(notifier *nf)
{
    if (!nf)
        return;
    atomic_store(&nf->stopping, true);
    curl_multi_wakeup(nf->multi);
    pthread_join(nf->thread, NULL);
    curl_multi_cleanup(nf->multi);
    pthread_mutex_destroy(&nf->mu);
    pthread_cond_destroy(&nf->cond);
    free(nf->secret);
    free(nf);
}
