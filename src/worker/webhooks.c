/*
 * webhooks.c - the webhook senders; see webhooks.h.
 */
#include "worker/webhooks.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "api/api.h"
#include "obs/log.h"
#include "util/netaddr.h"
#include "util/sign.h"
#include "util/util.h"
#include "worker/poller.h"

#define STORE_WAIT_MS 5000
#define LEASE_EXTRA_MS 5000 /* a claimed event is back after its timeout and this */
#define ERROR_TEXT_MAX 120

struct webhook_sender {
    struct app *app;
    struct webhook_options opts;
    poller *poller;
};

char *webhook_event_body(store *s, const struct event *e)
{
    json_t *data = NULL;
    if (strncmp(e->type, "payment.", 8) == 0) {
        struct payment p;
        if (store_payment_get(s, e->merchant_id, e->object_id, &p) == STORE_OK)
            data = api_payment_json(&p);
    } else {
        struct refund r;
        if (store_refund_get(s, e->merchant_id, e->object_id, &r) == STORE_OK)
            data = api_refund_json(&r);
    }
    if (!data)
        return NULL;
    char created[RFC3339_LEN + 1];
    clock_format_rfc3339(e->created_ms, created);
    json_t *body = json_pack("{s:s, s:s, s:s, s:o}", "id", e->id, "type", e->type,
                             "created_at", created, "data", data);
    char *text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    return text;
}

static size_t discard(char *data, size_t size, size_t nmemb, void *arg)
{
    (void)data;
    (void)arg;
    return size * nmemb;
}

/* The address check (util/netaddr.h), unless [webhooks] allow_private is
 * on: curl asks check_socket for a socket for each address it will try,
 * after resolving the URL's name and before connecting, so a name that
 * resolves to a non-public address gets no connection at all (and a DNS
 * answer that changes between the PUT and the delivery is caught too).
 * check_request, called once connected and before the request is sent,
 * checks the connection's address again. Proxies from the environment
 * are not used then: the check would see the proxy's address. */
struct address_check {
    char refused[ERROR_TEXT_MAX]; /* why, when it refused */
};

static bool refused(struct address_check *check, const char *ip, int port)
{
    enum addr_kind kind = addr_kind_of(ip);
    if (kind == ADDR_PUBLIC)
        return false;
    snprintf(check->refused, sizeof(check->refused),
             "address %s port %d is %s; [webhooks] allow_private is off", ip, port,
             addr_kind_name(kind));
    return true;
}

static curl_socket_t check_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)purpose;
    char ip[INET6_ADDRSTRLEN] = "";
    int port = 0;
    /* curl_sockaddr's addr holds a whole sockaddr_in6 when family says so */
    if (a->family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&a->addr;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    } else if (a->family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&a->addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    }
    if (refused(arg, ip, port))
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int check_request(void *arg, char *primary_ip, char *local_ip, int primary_port,
                         int local_port)
{
    (void)local_ip;
    (void)local_port;
    return refused(arg, primary_ip, primary_port) ? CURL_PREREQFUNC_ABORT : CURL_PREREQFUNC_OK;
}

/* POSTs body to the endpoint; returns the HTTP status (0: none) and, when
 * it is not a 2xx, a short error text. */
static int post(const struct webhook_options *o, const struct event *e, const char *body,
                char error[ERROR_TEXT_MAX])
{
    char ts[24], sig[SIGN_HEX_LEN + 1], line[256];
    snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000));
    sign_compute(e->secret, ts, body, strlen(body), sig);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(line, sizeof(line), "Payd-Signature: t=%s,v1=%s", ts, sig);
    h = curl_slist_append(h, line);
    snprintf(line, sizeof(line), "Payd-Event-Id: %s", e->id);
    h = curl_slist_append(h, line);
    h = curl_slist_append(h, "User-Agent: payd/" PAYD_VERSION);
    h = curl_slist_append(h, "Expect:");
    CURL *c = curl_easy_init();
    PAYD_ASSERT(c);
    curl_easy_setopt(c, CURLOPT_URL, e->url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    struct address_check check = {.refused = ""};
    if (!o->allow_private) {
        curl_easy_setopt(c, CURLOPT_PROXY, "");
        curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, check_socket);
        curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, &check);
        curl_easy_setopt(c, CURLOPT_PREREQFUNCTION, check_request);
        curl_easy_setopt(c, CURLOPT_PREREQDATA, &check);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    if (rc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK && check.refused[0]) /* another address may have been fine */
        snprintf(error, ERROR_TEXT_MAX, "%s", check.refused);
    else if (rc != CURLE_OK)
        snprintf(error, ERROR_TEXT_MAX, "%s", curl_easy_strerror(rc));
    else if (status < 200 || status > 299)
        snprintf(error, ERROR_TEXT_MAX, "HTTP %ld", status);
    else
        error[0] = '\0';
    curl_easy_cleanup(c);
    curl_slist_free_all(h);
    return (int)status;
}

static int64_t backoff_ms(const struct webhook_options *o, int64_t attempts)
{
    int64_t d = o->retry_base_ms;
    for (int64_t i = 1; i < attempts && d < o->retry_max_ms; i++)
        d *= 2;
    return d < o->retry_max_ms ? d : o->retry_max_ms;
}

static void record(webhook_sender *w, const struct event *e, bool delivered, int status,
                   const char *error)
{
    struct store_op op = {.kind = STORE_OP_EVENT_FINISH};
    op.in.event_finish.id = e->id;
    op.in.event_finish.delivered = delivered;
    op.in.event_finish.status = status;
    op.in.event_finish.error = error;
    int64_t delay = backoff_ms(&w->opts, e->attempts);
    bool give_up = clock_wall_ms() + delay > e->created_ms + w->opts.give_up_s * 1000;
    op.in.event_finish.retry_in_ms = give_up ? -1 : delay;
    /* On failure the lease runs out and the event is sent again. */
    store_exec(w->app->store, &op, STORE_WAIT_MS);
    if (delivered)
        return;
    char n[24];
    snprintf(n, sizeof(n), "%lld", (long long)e->attempts);
    if (give_up)
        log_error("webhook_failed", "event_id", e->id, "merchant_id", e->merchant_id,
                  "attempts", n, "error", error, NULL);
    else
        log_info("webhook_retry", "event_id", e->id, "merchant_id", e->merchant_id,
                 "attempts", n, "error", error, NULL);
}

static void deliver(webhook_sender *w, const struct event *e)
{
    if (!e->has_endpoint) {
        record(w, e, false, 0, "the merchant has no webhook endpoint");
        return;
    }
    char *body = webhook_event_body(w->app->store, e);
    if (!body) {
        record(w, e, false, 0, "its object cannot be read");
        return;
    }
    char error[ERROR_TEXT_MAX];
    int status = post(&w->opts, e, body, error);
    free(body);
    bool ok = status >= 200 && status <= 299;
    record(w, e, ok, status, ok ? NULL : error);
}

static int64_t next_due_ms(void *arg)
{
    webhook_sender *w = arg;
    return store_event_next_due_ms(w->app->store);
}

/* Claims one event at a time: its lease then covers one delivery. */
static int run(void *arg)
{
    webhook_sender *w = arg;
    struct event *e = xcalloc(1, sizeof(*e)); /* 4 KiB: not on a thread's stack */
    struct store_op op = {.kind = STORE_OP_EVENT_CLAIM};
    op.in.event_claim.max = 1;
    op.in.event_claim.lease_ms = w->opts.timeout_ms + LEASE_EXTRA_MS;
    op.in.event_claim.events = e;
    int n = 0;
    if (store_exec(w->app->store, &op, STORE_WAIT_MS) == STORE_OK)
        n = op.out.claimed;
    if (n)
        deliver(w, e);
    free(e);
    return n;
}

static const struct poller_ops webhook_ops = {
    .thread_name = "payd-webhook",
    .next_due_ms = next_due_ms,
    .run = run,
};

webhook_sender *webhooks_start(struct app *app, const struct webhook_options *opts)
{
    webhook_sender *w = xcalloc(1, sizeof(*w));
    w->app = app;
    w->opts = *opts;
    w->poller = poller_start(opts->threads, opts->poll_ms, &webhook_ops, w);
    return w;
}

void webhooks_wake(webhook_sender *w)
{
    if (w)
        poller_wake(w->poller);
}

void webhooks_stop(webhook_sender *w)
{
    if (!w)
        return;
    poller_stop(w->poller);
    free(w);
}
