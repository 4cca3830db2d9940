/*
 * payctl - payd's operator tool.
 *
 *   payctl reconcile --date YYYY-MM-DD [--channel NAME] [--config FILE] [--data-dir DIR]
 *   payctl status --topology FILE      (status.c: a two-site deployment's parts)
 *
 * Reconciliation (对账): fetches each channel's statement of that UTC day
 * and compares it with payd's payments and refunds, both ways:
 *
 *   missing_at_payd     the channel moved money payd has no record of
 *   missing_at_channel  payd recorded a success the channel's statement lacks
 *   status_mismatch     the channel moved money; payd's record is not succeeded
 *   amount_mismatch     amount or currency differ
 *
 * A charge journaled by the channel just before midnight may be recorded by
 * payd just after it, and the other way round: payd's side of day D is
 * looked for in the statements of D-1, D and D+1, so that a charge is
 * "missing" only when no statement around it has it.
 *
 * Prints one table per channel, records each report in the store
 * (reconciliations), and exits 0 when everything matches, 1 on any
 * difference, 2 on a bad command line, 3 when a statement or payd's
 * records cannot be read.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel.h"
#include "cli.h"
#include "status.h"
#include "util/util.h"

#define EXIT_DIFFERENT 1
#define EXIT_USAGE 2
#define EXIT_FAILED 3
#define STORE_WAIT_MS 10000

static void usage(void)
{
    fprintf(stderr, "usage:\n"
                    "  payctl reconcile --date YYYY-MM-DD [--channel NAME] [--config FILE]"
                    " [--data-dir DIR]\n"
                    "  payctl status --topology FILE\n");
}

struct recon {
    store *store;
    const char *channel;
    struct chan_statement day, around; /* around: D-1 and D+1 */
    json_t *differences;
    int64_t payd_charges, payd_refunds;
};

static void differ(struct recon *r, const char *kind, bool refund, const char *number,
                   const char *payd_id, const char *payd_status, int64_t payd_amount,
                   int64_t channel_amount)
{
    json_t *d = json_pack("{s:s, s:s, s:s}", "kind", kind, "type", refund ? "refund" : "charge",
                          "number", number);
    if (payd_id)
        json_object_set_new(d, "payd_id", json_string(payd_id));
    if (payd_status)
        json_object_set_new(d, "payd_status", json_string(payd_status));
    if (payd_amount >= 0)
        json_object_set_new(d, "payd_amount", json_integer(payd_amount));
    if (channel_amount >= 0)
        json_object_set_new(d, "channel_amount", json_integer(channel_amount));
    json_array_append_new(r->differences, d);
}

/* The channel's lines of day D against payd's records. */
static int check_channel_side(struct recon *r)
{
    for (int i = 0; i < r->day.count; i++) {
        const struct chan_statement_item *it = &r->day.items[i];
        int rc;
        const char *id, *ch, *cur;
        enum payment_status status;
        int64_t amount;
        struct payment p;
        struct refund f;
        if (it->refund) {
            rc = store_refund_by_no(r->store, it->number, &f);
            id = f.id, ch = f.channel, cur = f.currency, status = f.status;
            amount = f.amount_minor;
        } else {
            rc = store_payment_by_serial(r->store, it->number, &p);
            id = p.id, ch = p.channel, cur = p.currency, status = p.status;
            amount = p.amount_minor;
        }
        if (rc == STORE_E_NOT_FOUND || (rc == STORE_OK && strcmp(ch, r->channel) != 0)) {
            differ(r, "missing_at_payd", it->refund, it->number, NULL, NULL, -1,
                   it->amount_minor);
            continue;
        }
        if (rc != STORE_OK)
            return -1;
        if (status != PAYMENT_SUCCEEDED)
            differ(r, "status_mismatch", it->refund, it->number, id,
                   payment_status_name(status), amount, it->amount_minor);
        else if (amount != it->amount_minor || strcmp(cur, it->currency) != 0)
            differ(r, "amount_mismatch", it->refund, it->number, id, NULL, amount,
                   it->amount_minor);
    }
    return 0;
}

static bool listed(const struct chan_statement *st, bool refund, const char *number)
{
    for (int i = 0; i < st->count; i++)
        if (st->items[i].refund == refund && strcmp(st->items[i].number, number) == 0)
            return true;
    return false;
}

static int payd_payment(void *arg, const struct payment *p)
{
    struct recon *r = arg;
    r->payd_charges++;
    if (!listed(&r->day, false, p->serial_no) && !listed(&r->around, false, p->serial_no))
        differ(r, "missing_at_channel", false, p->serial_no, p->id, "succeeded",
               p->amount_minor, -1);
    return 0;
}

static int payd_refund(void *arg, const struct refund *f)
{
    struct recon *r = arg;
    r->payd_refunds++;
    if (!listed(&r->day, true, f->refund_no) && !listed(&r->around, true, f->refund_no))
        differ(r, "missing_at_channel", true, f->refund_no, f->id, "succeeded",
               f->amount_minor, -1);
    return 0;
}

/* Appends the statement of the day at day_ms to *st. */
static int fetch(channel *ch, int64_t day_ms, struct chan_statement *st, bool *complete)
{
    char date[DATE_LEN + 1], err[512];
    date_format(day_ms, date);
    struct chan_statement one;
    if (channel_statement(ch, date, &one, err, sizeof(err)) != 0) {
        fprintf(stderr, "payctl: channel %s: statement of %s: %s\n", ch->name, date, err);
        return -1;
    }
    if (complete)
        *complete = one.complete;
    st->items = xrealloc(st->items, (size_t)(st->count + one.count + 1) * sizeof(*st->items));
    if (one.count)
        memcpy(st->items + st->count, one.items, (size_t)one.count * sizeof(*one.items));
    st->count += one.count;
    chan_statement_free(&one);
    return 0;
}

static int count_type(const struct chan_statement *st, bool refund)
{
    int n = 0;
    for (int i = 0; i < st->count; i++)
        n += st->items[i].refund == refund;
    return n;
}

/* Reconciles one channel; returns the number of differences, or -1. */
static int reconcile(store *s, channel *ch, const char *date, int64_t day_ms)
{
    struct recon r = {.store = s, .channel = ch->name, .differences = json_array()};
    bool complete = false;
    int result = -1;
    if (fetch(ch, day_ms, &r.day, &complete) != 0 ||
        fetch(ch, day_ms - DAY_MS, &r.around, NULL) != 0 ||
        fetch(ch, day_ms + DAY_MS, &r.around, NULL) != 0)
        goto out;
    if (check_channel_side(&r) != 0 ||
        store_payments_succeeded(s, ch->name, day_ms, day_ms + DAY_MS, payd_payment, &r) !=
            STORE_OK ||
        store_refunds_succeeded(s, ch->name, day_ms, day_ms + DAY_MS, payd_refund, &r) !=
            STORE_OK) {
        fprintf(stderr, "payctl: cannot read payd's records\n");
        goto out;
    }
    size_t n = json_array_size(r.differences);
    json_t *report = json_pack("{s:s, s:s, s:b, s:i, s:i, s:I, s:I, s:O}", "date", date,
                               "channel", ch->name, "complete", complete, "channel_charges",
                               count_type(&r.day, false), "channel_refunds",
                               count_type(&r.day, true), "payd_charges",
                               (json_int_t)r.payd_charges, "payd_refunds",
                               (json_int_t)r.payd_refunds, "differences", r.differences);
    char *text = json_dumps(report, JSON_COMPACT | JSON_PRESERVE_ORDER);

    printf("reconciliation %s  channel %s%s\n", date, ch->name,
           complete ? "" : "  (the day is not over: the statement is incomplete)");
    printf("  %-22s %10s %10s\n", "", "channel", "payd");
    printf("  %-22s %10d %10lld\n", "charges", count_type(&r.day, false),
           (long long)r.payd_charges);
    printf("  %-22s %10d %10lld\n", "refunds", count_type(&r.day, true),
           (long long)r.payd_refunds);
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(r.differences, i);
        char *line = json_dumps(d, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("  DIFFERENCE %s\n", line);
        free(line);
    }
    printf("  %s: %zu difference%s\n", n ? "DIFFERENT" : "clean", n, n == 1 ? "" : "s");

    struct store_op op = {.kind = STORE_OP_RECONCILIATION_RECORD};
    op.in.reconciliation.date = date;
    op.in.reconciliation.channel = ch->name;
    op.in.reconciliation.run_ms = clock_wall_ms();
    op.in.reconciliation.differences = (int64_t)n;
    op.in.reconciliation.report = text;
    if (store_exec(s, &op, STORE_WAIT_MS) != STORE_OK)
        fprintf(stderr, "payctl: the report could not be recorded\n");
    else
        result = (int)n;
    free(text);
    json_decref(report);
out:
    json_decref(r.differences);
    chan_statement_free(&r.day);
    chan_statement_free(&r.around);
    return result;
}

static int cmd_reconcile(const struct cli_args *a)
{
    int64_t day_ms;
    if (!a->date || date_parse(a->date, &day_ms) != 0) {
        fprintf(stderr, "payctl: reconcile needs --date YYYY-MM-DD (a real date)\n");
        return EXIT_USAGE;
    }
    struct conf conf;
    if (cli_load_conf("payctl", a, &conf) != 0)
        return EXIT_USAGE;
    char err[512];
    channel_set *set = channel_set_new(&conf, err, sizeof(err));
    if (!set) {
        fprintf(stderr, "payctl: %s\n", err);
        return EXIT_FAILED;
    }
    if (a->channel && !channel_set_find(set, a->channel)) {
        fprintf(stderr, "payctl: no channel %s in the configuration\n", a->channel);
        channel_set_free(set);
        return EXIT_USAGE;
    }
    store *s = cli_open_store("payctl", &conf, NULL, NULL);
    if (!s) {
        channel_set_free(set);
        return EXIT_FAILED;
    }
    int status = 0;
    for (int i = 0; i < channel_set_count(set); i++) {
        channel *ch = channel_set_at(set, i);
        if (a->channel && strcmp(ch->name, a->channel) != 0)
            continue;
        int n = reconcile(s, ch, a->date, day_ms);
        if (n < 0)
            status = EXIT_FAILED;
        else if (n > 0 && status == 0)
            status = EXIT_DIFFERENT;
    }
    store_close(s);
    channel_set_free(set);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "status") == 0) {
        if (argc != 4 || strcmp(argv[2], "--topology") != 0) {
            usage();
            return EXIT_USAGE;
        }
        curl_global_init(CURL_GLOBAL_DEFAULT);
        int rc = payctl_status(argv[3]);
        curl_global_cleanup();
        return rc;
    }
    struct cli_args a;
    if (cli_parse_args("payctl", argc - 2, argv + 2, &a) != 0 || a.positional_count != 0) {
        usage();
        return EXIT_USAGE;
    }
    if (strcmp(argv[1], "reconcile") != 0) {
        usage();
        return EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "payctl: cannot initialise libcurl\n");
        return EXIT_FAILED;
    }
    int rc = cmd_reconcile(&a);
    curl_global_cleanup();
    return rc;
}
