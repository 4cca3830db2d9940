/*
 * http.c - a remote channel (PSP) over HTTP, with paysim's contract
 * (docs/paysim.md): POST /v1/charges deduplicated by the serial number
 * (out_trade_no), GET /v1/charges/{serial} to resolve an unknown outcome,
 * every request signed with HMAC-SHA256 over "timestamp.body".
 *
 * One libcurl multi handle per channel, driven by one thread: worker
 * threads hand it a call and wait for its outcome, so the calls of every
 * worker share one event loop and one pool of kept-alive connections, and
 * each has its own timeout. Every answer maps to one outcome:
 *
 *   200 succeeded / declined       SUCCEEDED / DECLINED
 *   409 trade_closed               DECLINED (never charged)
 *   500, 503, other 4xx            ERROR: the PSP did nothing
 *   anything else (a timeout, a reset, a refused connection, a connection
 *   closed without an answer, an answer that cannot be read)
 *                                  UNKNOWN: resolved by query, never by a
 *                                  charge under another number
 *
 * A query answers SUCCEEDED / DECLINED / NOT_FOUND (404, or a closed
 * trade), and UNKNOWN when it gets no usable answer. A refund (POST
 * /v1/refunds, deduplicated by its number) maps its answers the same way.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "channel/channel.h"
#include "util/sign.h"
#include "util/util.h"

#define CONNECT_TIMEOUT_MS 2000
#define ANSWER_MAX_BYTES (64 << 10) /* an answer longer than this is not one */
#define POLL_MS 1000
#define STATEMENT_MAX_BYTES (512 << 20) /* a day of a busy channel */
#define STATEMENT_TIMEOUT_MS 120000


/* One request in flight; lives on its caller's stack. */
struct call {
    struct call *next; /* in the channel's pending list */
    CURL *easy;
    struct curl_slist *headers;
    char *body; /* the request body (NULL for a GET) */
    char *answer;
    size_t answer_len;
    bool too_long;
    size_t max_bytes;   /* 0: ANSWER_MAX_BYTES */
    int64_t timeout_ms; /* 0: the channel's */
    long status;
    CURLcode rc;
    bool done;
    pthread_cond_t done_cv;
};

struct http_channel {
    channel base;
    char url[CONF_PATH_MAX];
    char secret[sizeof(((struct conf_channel *)0)->secret)];
    char notify_url[CONF_PATH_MAX]; /* "": the PSP's default, or none */
    char method_names[sizeof(((struct conf_channel *)0)->methods)];
    const char *methods[CONF_METHODS_MAX + 1]; /* into method_names */
    CURLM *multi;
    pthread_t thread;
    pthread_mutex_t mu;
    struct call *pending; /* handed over, not yet added to the multi handle */
    bool stopping;
};

static size_t on_answer_bytes(char *data, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb;
    if (c->answer_len + n > (c->max_bytes ? c->max_bytes : ANSWER_MAX_BYTES)) {
        c->too_long = true;
        return 0; /* ends the transfer with an error */
    }
    c->answer = xrealloc(c->answer, c->answer_len + n + 1);
    memcpy(c->answer + c->answer_len, data, n);
    c->answer_len += n;
    c->answer[c->answer_len] = '\0';
    return n;
}

/* The signature headers of a request with this body. */
static struct curl_slist *signed_headers(const struct http_channel *h, const char *body)
{
    char ts[24], sig[SIGN_HEX_LEN + 1], line[128];
    snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000));
    sign_compute(h->secret, ts, body ? body : "", body ? strlen(body) : 0, sig);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    snprintf(line, sizeof(line), SIGN_HEADER_TIMESTAMP ": %s", ts);
    headers = curl_slist_append(headers, line);
    snprintf(line, sizeof(line), SIGN_HEADER_SIGNATURE ": %s", sig);
    headers = curl_slist_append(headers, line);
    /* No "Expect: 100-continue" round trip for a small body. */
    return curl_slist_append(headers, "Expect:");
}

/* Hands the call to the channel's thread and waits for its end. */
static void perform(struct http_channel *h, struct call *c, const char *path)
{
    char url[CONF_PATH_MAX + 160];
    snprintf(url, sizeof(url), "%s%s", h->url, path);
    c->easy = curl_easy_init();
    PAYD_ASSERT(c->easy);
    c->headers = signed_headers(h, c->body);
    curl_easy_setopt(c->easy, CURLOPT_URL, url);
    curl_easy_setopt(c->easy, CURLOPT_HTTPHEADER, c->headers);
    if (c->body)
        curl_easy_setopt(c->easy, CURLOPT_POSTFIELDS, c->body);
    curl_easy_setopt(c->easy, CURLOPT_TIMEOUT_MS,
                     (long)(c->timeout_ms ? c->timeout_ms : h->base.timeout_ms));
    curl_easy_setopt(c->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(h->base.timeout_ms < CONNECT_TIMEOUT_MS ? h->base.timeout_ms
                                                                    : CONNECT_TIMEOUT_MS));
    curl_easy_setopt(c->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c->easy, CURLOPT_WRITEFUNCTION, on_answer_bytes);
    curl_easy_setopt(c->easy, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(c->easy, CURLOPT_PRIVATE, c);
    pthread_cond_init(&c->done_cv, NULL);

    pthread_mutex_lock(&h->mu);
    c->next = h->pending;
    h->pending = c;
    pthread_mutex_unlock(&h->mu);
    curl_multi_wakeup(h->multi);
    pthread_mutex_lock(&h->mu);
    while (!c->done)
        pthread_cond_wait(&c->done_cv, &h->mu);
    pthread_mutex_unlock(&h->mu);

    pthread_cond_destroy(&c->done_cv);
    curl_easy_cleanup(c->easy);
    curl_slist_free_all(c->headers);
}

/* The channel's thread: adds the calls handed over, runs the transfers,
 * and wakes each caller when its call ends. */
static void *loop_main(void *arg)
{
    struct http_channel *h = arg;
    pthread_setname_np(pthread_self(), "payd-chanhttp");
    for (;;) {
        pthread_mutex_lock(&h->mu);
        bool stopping = h->stopping;
        struct call *list = h->pending;
        h->pending = NULL;
        pthread_mutex_unlock(&h->mu);
        for (struct call *c = list; c; c = c->next)
            PAYD_ASSERT(curl_multi_add_handle(h->multi, c->easy) == CURLM_OK);
        int running = 0;
        curl_multi_perform(h->multi, &running);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct call *c = NULL;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
            c->rc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &c->status);
            curl_multi_remove_handle(h->multi, msg->easy_handle);
            pthread_mutex_lock(&h->mu);
            c->done = true;
            pthread_cond_signal(&c->done_cv);
            pthread_mutex_unlock(&h->mu);
        }
        /* Callers are gone only after their calls ended: stop when none is
         * left in flight. */
        if (stopping && running == 0 && !list)
            break;
        curl_multi_poll(h->multi, NULL, 0, POLL_MS, NULL);
    }
    return NULL;
}

/* Reads a charge object (a 200 answer) into res; false when it is not
 * one. */
static bool read_charge(const char *answer, struct chan_result *res)
{
    json_t *o = json_loads(answer ? answer : "", 0, NULL);
    const char *status = json_string_value(json_object_get(o, "status"));
    bool ok = true;
    if (status && strcmp(status, "succeeded") == 0) {
        const char *trade_no = json_string_value(json_object_get(o, "trade_no"));
        if (!trade_no || strlen(trade_no) > CHANNEL_TXN_ID_MAX) {
            ok = false;
        } else {
            res->outcome = CHAN_SUCCEEDED;
            snprintf(res->txn_id, sizeof(res->txn_id), "%s", trade_no);
        }
    } else if (status && strcmp(status, "declined") == 0) {
        res->outcome = CHAN_DECLINED;
        const char *code = json_string_value(json_object_get(o, "code"));
        const char *message = json_string_value(json_object_get(o, "message"));
        snprintf(res->code, sizeof(res->code), "%s", code ? code : "declined");
        snprintf(res->message, sizeof(res->message), "%s",
                 message ? message : "The payment was declined.");
    } else if (status && strcmp(status, "closed") == 0) {
        res->outcome = CHAN_NOT_FOUND; /* never charged, and never will be */
    } else {
        ok = false;
    }
    json_decref(o);
    return ok;
}

/* The error code of an error answer, or "". */
static void error_code(const char *answer, char *out, size_t size)
{
    json_t *o = json_loads(answer ? answer : "", 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(o, "error"), "code"));
    snprintf(out, size, "%s", code ? code : "");
    json_decref(o);
}

/* The PSP closed the trade: never charged, and never will be. */
static void closed_trade(struct chan_result *res)
{
    res->outcome = CHAN_DECLINED;
    snprintf(res->code, sizeof(res->code), "trade_closed");
    snprintf(res->message, sizeof(res->message), "The channel closed this trade.");
}

static void http_charge(channel *ch, const struct chan_request *req, struct chan_result *res)
{
    struct http_channel *h = (struct http_channel *)ch;
    memset(res, 0, sizeof(*res));
    struct call c = {0};
    json_t *body = json_pack("{s:s, s:I, s:s, s:s}", "out_trade_no", req->serial_no, "amount",
                             (json_int_t)req->amount_minor, "currency", req->currency, "method",
                             req->method);
    if (h->notify_url[0])
        json_object_set_new(body, "notify_url", json_string(h->notify_url));
    c.body = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    perform(h, &c, "/v1/charges");
    char code[48];
    error_code(c.answer, code, sizeof(code));
    if (c.rc != CURLE_OK) {
        /* Even a refused connection is unknown: when a kept-alive
         * connection dies after the request went out, libcurl sends it
         * again on a new one, and that connect may be the one refused. */
        res->outcome = CHAN_UNKNOWN;
    } else if (c.status == 200) {
        if (!read_charge(c.answer, res))
            res->outcome = CHAN_UNKNOWN; /* an answer we cannot read says nothing */
        else if (res->outcome == CHAN_NOT_FOUND)
            closed_trade(res); /* a charge answered "closed": as 409 trade_closed */
    } else if (c.status == 409 && strcmp(code, "trade_closed") == 0) {
        closed_trade(res);
    } else if (c.status >= 400 && c.status < 600 && c.status != 409) {
        res->outcome = CHAN_ERROR; /* the PSP did nothing */
    } else {
        /* 409 duplicate_out_trade_no (our serial numbers are unique: the
         * query tells what that number holds) or an unexpected status. */
        res->outcome = CHAN_UNKNOWN;
    }
    free(c.body);
    free(c.answer);
}

static void http_query(channel *ch, const char *serial_no, struct chan_result *res)
{
    struct http_channel *h = (struct http_channel *)ch;
    memset(res, 0, sizeof(*res));
    struct call c = {0};
    char path[160];
    snprintf(path, sizeof(path), "/v1/charges/%s", serial_no);
    perform(h, &c, path);
    if (c.rc != CURLE_OK)
        res->outcome = CHAN_UNKNOWN;
    else if (c.status == 404)
        res->outcome = CHAN_NOT_FOUND;
    else if (c.status != 200 || !read_charge(c.answer, res))
        res->outcome = CHAN_UNKNOWN;
    free(c.answer);
}

/* POST /v1/charges/{serial}/close: its answer is final (closed, or the
 * charge that landed). */
static void http_close(channel *ch, const char *serial_no, struct chan_result *res)
{
    struct http_channel *h = (struct http_channel *)ch;
    memset(res, 0, sizeof(*res));
    struct call c = {.body = xstrdup("{}")};
    char path[160];
    snprintf(path, sizeof(path), "/v1/charges/%s/close", serial_no);
    perform(h, &c, path);
    if (c.rc != CURLE_OK)
        res->outcome = CHAN_UNKNOWN;
    else if (c.status == 200) {
        if (!read_charge(c.answer, res))
            res->outcome = CHAN_UNKNOWN;
    } else if (c.status >= 400 && c.status < 600 && c.status != 409)
        res->outcome = CHAN_ERROR;
    else
        res->outcome = CHAN_UNKNOWN;
    free(c.body);
    free(c.answer);
}

/* POST /v1/refunds. A refusal (404: no such charge, 409: not refundable or
 * more than is left) is final; 409 duplicate_out_refund_no cannot happen
 * with payd's unique refund numbers and is left unknown, for a person. */
static void http_refund(channel *ch, const struct chan_refund_request *req,
                        struct chan_result *res)
{
    struct http_channel *h = (struct http_channel *)ch;
    memset(res, 0, sizeof(*res));
    struct call c = {0};
    json_t *body = json_pack("{s:s, s:s, s:I}", "out_trade_no", req->serial_no,
                             "out_refund_no", req->refund_no, "amount",
                             (json_int_t)req->amount_minor);
    if (h->notify_url[0])
        json_object_set_new(body, "notify_url", json_string(h->notify_url));
    c.body = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(body);
    perform(h, &c, "/v1/refunds");
    char code[FAILURE_CODE_MAX + 1];
    error_code(c.answer, code, sizeof(code));
    res->outcome = CHAN_UNKNOWN;
    if (c.rc != CURLE_OK) {
        /* unknown, as for a charge */
    } else if (c.status == 200) {
        json_t *o = json_loads(c.answer ? c.answer : "", 0, NULL);
        const char *status = json_string_value(json_object_get(o, "status"));
        const char *id = json_string_value(json_object_get(o, "refund_id"));
        if (status && strcmp(status, "succeeded") == 0 && id &&
            strlen(id) <= CHANNEL_TXN_ID_MAX) {
            res->outcome = CHAN_SUCCEEDED;
            snprintf(res->txn_id, sizeof(res->txn_id), "%s", id);
        }
        json_decref(o);
    } else if (c.status == 404 || (c.status == 409 && (strcmp(code, "charge_not_refundable") == 0 ||
                                                       strcmp(code, "refund_exceeds_charge") == 0))) {
        res->outcome = CHAN_DECLINED;
        snprintf(res->code, sizeof(res->code), "%s", c.status == 404 ? "charge_not_found" : code);
        snprintf(res->message, sizeof(res->message), "The channel refused the refund.");
    } else if (c.status >= 400 && c.status < 600 && c.status != 409) {
        res->outcome = CHAN_ERROR;
    }
    free(c.body);
    free(c.answer);
}

/* GET /v1/statements?date=D: JSON lines, the items then a summary line
 * (always last: without it the answer was cut short). */
static int http_statement(channel *ch, const char *date, struct chan_statement *out, char *err,
                          size_t err_size)
{
    struct http_channel *h = (struct http_channel *)ch;
    memset(out, 0, sizeof(*out));
    struct call c = {.max_bytes = STATEMENT_MAX_BYTES, .timeout_ms = STATEMENT_TIMEOUT_MS};
    char path[64];
    snprintf(path, sizeof(path), "/v1/statements?date=%.10s", date);
    perform(h, &c, path);
    int rc = -1;
    if (c.rc != CURLE_OK) {
        snprintf(err, err_size, "%s: %s", h->url, curl_easy_strerror(c.rc));
        goto out;
    }
    if (c.status != 200) {
        snprintf(err, err_size, "%s%s: HTTP %ld %.200s", h->url, path, c.status,
                 c.answer ? c.answer : "");
        goto out;
    }
    int cap = 0;
    bool summary = false;
    int64_t want_charges = -1, want_refunds = -1, got_charges = 0, got_refunds = 0;
    for (char *line = c.answer, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        json_t *o = json_loads(line, 0, NULL);
        const char *type = json_string_value(json_object_get(o, "type"));
        bool item = type && (strcmp(type, "charge") == 0 || strcmp(type, "refund") == 0);
        if (summary || !(item || (type && strcmp(type, "summary") == 0))) {
            /* A line that is not one, or anything after the summary: a
             * statement that cannot be read whole is not read at all. */
            snprintf(err, err_size, "%s%s: unreadable statement line: %.120s", h->url, path,
                     line);
            json_decref(o);
            chan_statement_free(out);
            goto out;
        }
        if (!item) {
            summary = true;
            out->complete = json_is_true(json_object_get(o, "complete"));
            want_charges = json_integer_value(json_object_get(o, "charge_count"));
            want_refunds = json_integer_value(json_object_get(o, "refund_count"));
        } else {
            if (type[0] == 'r')
                got_refunds++;
            else
                got_charges++;
            if (out->count == cap) {
                cap = cap ? cap * 2 : 64;
                out->items = xrealloc(out->items, (size_t)cap * sizeof(*out->items));
            }
            struct chan_statement_item *it = &out->items[out->count++];
            memset(it, 0, sizeof(*it));
            it->refund = type[0] == 'r';
            const char *no = json_string_value(
                json_object_get(o, it->refund ? "out_refund_no" : "out_trade_no"));
            const char *charge = json_string_value(json_object_get(o, "out_trade_no"));
            const char *id = json_string_value(
                json_object_get(o, it->refund ? "refund_id" : "trade_no"));
            const char *cur = json_string_value(json_object_get(o, "currency"));
            snprintf(it->number, sizeof(it->number), "%s", no ? no : "");
            snprintf(it->charge_number, sizeof(it->charge_number), "%s", charge ? charge : "");
            snprintf(it->channel_id, sizeof(it->channel_id), "%s", id ? id : "");
            snprintf(it->currency, sizeof(it->currency), "%s", cur ? cur : "");
            it->amount_minor = json_integer_value(json_object_get(o, "amount"));
        }
        json_decref(o);
    }
    if (!summary || want_charges != got_charges || want_refunds != got_refunds) {
        snprintf(err, err_size,
                 "%s%s: the statement is cut short or inconsistent (summary %s, %lld/%lld"
                 " charges, %lld/%lld refunds)",
                 h->url, path, summary ? "present" : "missing", (long long)got_charges,
                 (long long)want_charges, (long long)got_refunds, (long long)want_refunds);
        chan_statement_free(out);
        goto out;
    }
    rc = 0;
out:
    free(c.answer);
    return rc;
}

static void http_free(channel *ch)
{
    struct http_channel *h = (struct http_channel *)ch;
    if (h->multi) {
        pthread_mutex_lock(&h->mu);
        h->stopping = true;
        pthread_mutex_unlock(&h->mu);
        curl_multi_wakeup(h->multi);
        pthread_join(h->thread, NULL);
        curl_multi_cleanup(h->multi);
    }
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static const struct channel_backend http_backend = {
    .type = "http",
    .charge = http_charge,
    .query = http_query,
    .refund = http_refund,
    .close = http_close,
    .statement = http_statement,
    .free = http_free,
};

channel *channel_http_new(const struct conf_channel *cc, char *err, size_t err_size)
{
    struct http_channel *h = xcalloc(1, sizeof(*h));
    h->base.be = &http_backend;
    snprintf(h->base.name, sizeof(h->base.name), "%s", cc->name);
    h->base.timeout_ms = cc->timeout_ms;
    /* [channel.NAME] methods, checked by the configuration: split in place. */
    snprintf(h->method_names, sizeof(h->method_names), "%s", cc->methods);
    int count = 0;
    for (char *m = h->method_names; m && count < CONF_METHODS_MAX;) {
        h->methods[count++] = m;
        m = strchr(m, ',');
        if (m)
            *m++ = '\0';
    }
    h->methods[count] = NULL;
    h->base.methods = h->methods;
    /* The base URL without a trailing slash: paths are appended. */
    size_t n = strlen(cc->url);
    while (n > 0 && cc->url[n - 1] == '/')
        n--;
    snprintf(h->url, sizeof(h->url), "%.*s", (int)n, cc->url);
    snprintf(h->secret, sizeof(h->secret), "%s", cc->secret);
    snprintf(h->notify_url, sizeof(h->notify_url), "%s", cc->notify_url);
    pthread_mutex_init(&h->mu, NULL);
    h->multi = curl_multi_init();
    if (!h->multi || pthread_create(&h->thread, NULL, loop_main, h) != 0) {
        snprintf(err, err_size, "channel %s: cannot start its HTTP client", cc->name);
        if (h->multi)
            curl_multi_cleanup(h->multi);
        h->multi = NULL;
        http_free(&h->base);
        return NULL;
    }
    return &h->base;
}
