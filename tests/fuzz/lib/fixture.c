/*
 * fixture.c - the fuzz targets' payd; see fixture.h.
 */
#include "lib/fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api.h"
#include "cli.h"
#include "obs/log.h"
#include "util/util.h"

#define STORE_WAIT_MS 10000
#define CACHE_SLOTS 4096
#define INFLIGHT_KEYS 4096
#define SERIES_POINTS 64

static struct conf g_conf, g_scratch_conf;
static struct app g_app;
static bool g_made;
static guards *g_scratch;
static char g_dir[1024];

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* At exit the store may still be open (libFuzzer exits from its own loop):
 * removing its files under it is fine on Linux. */
static void remove_tmpdir(void)
{
    if (g_dir[0])
        nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void set(struct conf *conf, const char *section, const char *key, const char *value)
{
    char err[CONF_ERR_MAX];
    if (conf_set(conf, section, key, value, err) != 0) {
        fprintf(stderr, "fuzz fixture: %s\n", err);
        abort();
    }
}

static void make_conf(struct conf *conf, const char *data_dir)
{
    conf_defaults(conf);
    set(conf, "server", "data_dir", data_dir);
    set(conf, "server", "admin_key", FUZZ_ADMIN_KEY);
    set(conf, "limits", "adaptive", "off");
    set(conf, "log", "level", "error");
    set(conf, "channel.sandbox", "type", "sandbox");
    set(conf, "channel.psp", "type", "http");
    set(conf, "channel.psp", "url", "http://127.0.0.1:9/");
    set(conf, "channel.psp", "secret", FUZZ_PSP_SECRET);
    set(conf, "channel.psp", "methods", "card,wallet");
    char err[CONF_ERR_MAX];
    if (conf_finish(conf, err) != 0) {
        fprintf(stderr, "fuzz fixture: %s\n", err);
        abort();
    }
}

static void exec(store *s, struct store_op *op, const char *what)
{
    int rc = store_exec(s, op, STORE_WAIT_MS);
    if (rc != STORE_OK) {
        fprintf(stderr, "fuzz fixture: %s: %s\n", what, store_rc_name(rc));
        abort();
    }
}

static void add_merchant(store *s, const char *id, const char *name, const char *key)
{
    char hash[65];
    api_key_hash(key, hash);
    struct store_op op = {.kind = STORE_OP_MERCHANT_ADD};
    snprintf(op.in.merchant.merchant.id, ID_MAX, "%s", id);
    snprintf(op.in.merchant.merchant.name, MERCHANT_NAME_MAX + 1, "%s", name);
    op.in.merchant.merchant.created_ms = clock_wall_ms();
    op.in.merchant.key_hash = hash;
    exec(s, &op, "merchant");
}

static void add_order(store *s, const char *id, const char *merchant, const char *number,
                      int64_t amount_minor, const char *currency)
{
    struct store_op op = {.kind = STORE_OP_ORDER_CREATE};
    struct order *o = &op.in.order_create;
    snprintf(o->id, sizeof(o->id), "%s", id);
    snprintf(o->merchant_id, sizeof(o->merchant_id), "%s", merchant);
    snprintf(o->merchant_order_no, sizeof(o->merchant_order_no), "%s", number);
    o->amount_minor = amount_minor;
    snprintf(o->currency, sizeof(o->currency), "%s", currency);
    o->status = ORDER_PENDING_PAYMENT;
    o->created_ms = clock_wall_ms();
    exec(s, &op, "order");
}

static void payment_of(struct payment *p, const char *id, const char *order, const char *merchant,
                       int64_t amount_minor, const char *currency, const char *channel,
                       const char *method, const char *serial)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->id, sizeof(p->id), "%s", id);
    snprintf(p->order_id, sizeof(p->order_id), "%s", order);
    snprintf(p->merchant_id, sizeof(p->merchant_id), "%s", merchant);
    p->amount_minor = amount_minor;
    snprintf(p->currency, sizeof(p->currency), "%s", currency);
    snprintf(p->channel, sizeof(p->channel), "%s", channel);
    snprintf(p->method, sizeof(p->method), "%s", method);
    snprintf(p->serial_no, sizeof(p->serial_no), "%s", serial);
    p->status = PAYMENT_PROCESSING;
    p->created_ms = p->updated_ms = clock_wall_ms();
}

static void add_payment(store *s, const struct payment *p)
{
    struct store_op op = {.kind = STORE_OP_PAYMENT_CREATE};
    op.in.payment_create.payment = *p;
    op.in.payment_create.fence = 1;
    exec(s, &op, "payment");
}

static void add_records(store *s)
{
    add_merchant(s, FUZZ_MERCHANT_A, "fuzz_a", FUZZ_KEY_A);
    add_merchant(s, FUZZ_MERCHANT_B, "fuzz_b", FUZZ_KEY_B);
    add_order(s, FUZZ_ORDER_OPEN, FUZZ_MERCHANT_A, "fuzz-open", 1000, "CNY");
    add_order(s, FUZZ_ORDER_PAID, FUZZ_MERCHANT_A, "fuzz-paid", FUZZ_PAID_AMOUNT, "CNY");
    add_order(s, FUZZ_ORDER_PROC, FUZZ_MERCHANT_A, "fuzz-processing", FUZZ_PROC_AMOUNT, "USD");
    add_order(s, FUZZ_ORDER_OTHER, FUZZ_MERCHANT_B, "fuzz-other", 700, "CNY");

    struct payment paid, proc, other;
    payment_of(&paid, FUZZ_PAYMENT_PAID, FUZZ_ORDER_PAID, FUZZ_MERCHANT_A, FUZZ_PAID_AMOUNT,
               "CNY", "psp", "card", FUZZ_SERIAL_PAID);
    payment_of(&proc, FUZZ_PAYMENT_PROC, FUZZ_ORDER_PROC, FUZZ_MERCHANT_A, FUZZ_PROC_AMOUNT,
               "USD", "psp", "wallet", FUZZ_SERIAL_PROC);
    payment_of(&other, FUZZ_PAYMENT_OTHER, FUZZ_ORDER_OTHER, FUZZ_MERCHANT_B, 700, "CNY",
               "sandbox", "ok", FUZZ_SERIAL_OTHER);
    add_payment(s, &paid);
    add_payment(s, &proc);
    add_payment(s, &other);

    struct store_op fin = {.kind = STORE_OP_PAYMENT_FINISH};
    fin.in.payment_finish.payment = paid;
    fin.in.payment_finish.payment.status = PAYMENT_SUCCEEDED;
    snprintf(fin.in.payment_finish.payment.channel_txn_id, CHANNEL_TXN_ID_MAX + 1,
             "txn_fuzz_paid");
    fin.in.payment_finish.fence = 1;
    exec(s, &fin, "payment finish");

    struct store_op rop = {.kind = STORE_OP_REFUND_CREATE};
    struct refund *rf = &rop.in.refund_create.refund;
    snprintf(rf->id, sizeof(rf->id), "%s", FUZZ_REFUND_PROC);
    snprintf(rf->payment_id, sizeof(rf->payment_id), "%s", FUZZ_PAYMENT_PAID);
    snprintf(rf->order_id, sizeof(rf->order_id), "%s", FUZZ_ORDER_PAID);
    snprintf(rf->merchant_id, sizeof(rf->merchant_id), "%s", FUZZ_MERCHANT_A);
    rf->amount_minor = FUZZ_REFUND_PROC_AMOUNT;
    snprintf(rf->currency, sizeof(rf->currency), "CNY");
    snprintf(rf->channel, sizeof(rf->channel), "psp");
    snprintf(rf->payment_serial_no, sizeof(rf->payment_serial_no), "%s", FUZZ_SERIAL_PAID);
    snprintf(rf->refund_no, sizeof(rf->refund_no), "%s", FUZZ_REFUND_NO_PROC);
    rf->status = PAYMENT_PROCESSING;
    rf->created_ms = rf->updated_ms = clock_wall_ms();
    exec(s, &rop, "refund");
}

static void make_tmpdir(void)
{
    const char *base = getenv("PAYD_FUZZ_TMPDIR");
    if (!base || !*base)
        base = getenv("TMPDIR");
    if (!base || !*base)
        base = "/tmp";
    snprintf(g_dir, sizeof(g_dir), "%s/payd-fuzz-XXXXXX", base);
    if (!mkdtemp(g_dir)) {
        fprintf(stderr, "fuzz fixture: cannot make a directory under %s\n", base);
        abort();
    }
    atexit(remove_tmpdir);
}

static void no_change(void *arg, int channel)
{
    (void)arg;
    (void)channel;
}

const char *fuzz_tmpdir(void)
{
    if (!g_dir[0])
        make_tmpdir();
    return g_dir;
}

struct app *fuzz_app(void)
{
    if (g_made)
        return &g_app;
    char data_dir[1100], err[512];
    snprintf(data_dir, sizeof(data_dir), "%s/data", fuzz_tmpdir());
    PAYD_ASSERT(mkdir(data_dir, 0700) == 0);
    make_conf(&g_conf, data_dir);
    log_init((enum log_format)g_conf.log_format, (enum log_level)g_conf.log_level);

    struct app *app = &g_app;
    app->conf = &g_conf;
    atomic_init(&app->draining, false);
    app->store = cli_open_store("fuzz fixture", &g_conf, NULL, NULL);
    PAYD_ASSERT(app->store);
    add_records(app->store);
    app->channels = channel_set_new(&g_conf, err, sizeof(err));
    if (!app->channels) {
        fprintf(stderr, "fuzz fixture: %s\n", err);
        abort();
    }
    static const char *names[CONF_CHANNELS_MAX];
    int count = channel_set_count(app->channels);
    for (int i = 0; i < count; i++)
        names[i] = channel_set_at(app->channels, i)->name;
    app->metrics = metrics_new(api_route_names, api_route_methods, api_route_count, names, count);
    app->catalogue = catalogue_cache_new();
    app->guards = guards_new(&g_conf, no_change, app, err, sizeof(err));
    app->alerts = alerts_new(&g_conf, names, count, err, sizeof(err));
    if (!app->guards || !app->alerts) {
        fprintf(stderr, "fuzz fixture: %s\n", err);
        abort();
    }
    app->series = series_new(SERIES_POINTS);
    app->inflight = idem_inflight_new(INFLIGHT_KEYS);
    app->keys = key_cache_new(g_conf.data_dir, CACHE_SLOTS);
    app->orders = order_cache_new(CACHE_SLOTS);
    app->lock = lock_local_new(store_max_fence(app->store));
    PAYD_ASSERT(app->lock);
    g_made = true;
    return app;
}

guards *fuzz_scratch_guards(void)
{
    if (g_scratch)
        return g_scratch;
    char dir[1100], err[512];
    snprintf(dir, sizeof(dir), "%s/scratch", fuzz_tmpdir());
    PAYD_ASSERT(mkdir(dir, 0700) == 0);
    make_conf(&g_scratch_conf, dir);
    g_scratch = guards_new(&g_scratch_conf, no_change, NULL, err, sizeof(err));
    if (!g_scratch) {
        fprintf(stderr, "fuzz fixture: %s\n", err);
        abort();
    }
    return g_scratch;
}
