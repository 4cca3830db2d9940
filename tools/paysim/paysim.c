/*
 * paysim.c - the program: a PSP simulator for payd's tests.
 *
 *   paysim --listen HOST:PORT --data-dir DIR --secret SECRET
 *          [--notify-url URL] [--notify-delays 4,10,10,60,120,360,900] [--threads N]
 *   paysim journal --data-dir DIR
 *
 * The server prints its URL ("http://127.0.0.1:PORT") on stdout once it
 * answers, and stops cleanly on SIGTERM or SIGINT (exit 0): it stops
 * accepting, answers 503 to requests still waiting out an injected latency,
 * closes held ("hang") connections, lets journal writes in flight finish
 * and be answered, stops notifying (what is pending stays pending) and
 * closes the journal. The signals are blocked in every thread and taken by
 * sigwait() here, so none is lost to a server thread. The whole contract is
 * docs/paysim.md.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "api.h"
#include "faults.h"
#include "hold.h"
#include "journal.h"
#include "log.h"
#include "notifier.h"
#include "server.h"
#include "timer.h"
#include "util/program.h"
#include "util/util.h"

#define THREADS_DEFAULT 4
#define THREADS_MAX 64
#define MAX_BODY_BYTES (64 << 10)
#define SHUTDOWN_GRACE_MS 10000
#define DELAY_MAX_S (7 * 86400)
#define LOCK_FILE "paysim.lock"

static const char *const default_delays = "4,10,10,60,120,360,900";

static void usage(void)
{
    fprintf(stderr,
            "usage:\n"
            "  paysim --listen HOST:PORT --data-dir DIR --secret SECRET\n"
            "         [--notify-url URL] [--notify-delays S,S,...] [--threads N]\n"
            "  paysim journal --data-dir DIR\n"
            "\n"
            "  --secret        the HMAC-SHA256 key shared with the merchant (or the\n"
            "                  environment variable PAYSIM_SECRET)\n"
            "  --notify-url    where notifications go when a charge names none\n"
            "  --notify-delays seconds to wait after each failed notification\n"
            "                  (default %s)\n"
            "  --threads       HTTP server threads (default %d)\n"
            "See docs/paysim.md.\n",
            default_delays, THREADS_DEFAULT);
}

struct args {
    const char *listen, *data_dir, *secret, *notify_url, *notify_delays, *threads;
};

static int parse_args(int argc, char **argv, struct args *a)
{
    memset(a, 0, sizeof(*a));
    const struct arg_option opts[] = {
        {"--listen", &a->listen},           {"--data-dir", &a->data_dir},
        {"--secret", &a->secret},           {"--notify-url", &a->notify_url},
        {"--notify-delays", &a->notify_delays}, {"--threads", &a->threads},
    };
    return args_parse("paysim", argc, argv, opts, ARRAY_LEN(opts), NULL, 0) < 0 ? -1 : 0;
}

/* HOST:PORT, [v6]:PORT; port 0 takes any free port. */
static int parse_listen(const char *s, char *host, size_t host_size, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -1;
    const char *h = s, *h_end = colon;
    if (*h == '[' && h_end[-1] == ']') {
        h++;
        h_end--;
    }
    if ((size_t)(h_end - h) >= host_size || h_end == h)
        return -1;
    memcpy(host, h, (size_t)(h_end - h));
    host[h_end - h] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

/* "4,10,0.5": seconds, up to millisecond precision. */
static int parse_delays(const char *s, int64_t *out, int *count)
{
    *count = 0;
    if (!*s)
        return 0;
    const char *p = s;
    for (;;) {
        if (*count == NOTIFY_DELAYS_MAX)
            return -1;
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !(v >= 0) || v > DELAY_MAX_S)
            return -1;
        out[(*count)++] = (int64_t)(v * 1000.0 + 0.5);
        if (*end == '\0')
            return 0;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
}

/* ---- paysim journal ---- */

static int cmd_journal(int argc, char **argv)
{
    struct args a;
    if (parse_args(argc, argv, &a) != 0 || !a.data_dir || a.listen || a.secret) {
        usage();
        return 2;
    }
    char err[512];
    journal *j = journal_open_reader(a.data_dir, err, sizeof(err));
    if (!j) {
        fprintf(stderr, "paysim: %s\n", err);
        return 1;
    }
    json_t *dump = journal_dump(j, true);
    journal_close(j);
    if (!dump) {
        fprintf(stderr, "paysim: the journal could not be read\n");
        return 1;
    }
    char *text = model_json_text(dump);
    printf("%s\n", text);
    free(text);
    return fflush(stdout) == 0 ? 0 : 1;
}

/* ---- the server ---- */

/* One paysim per data directory: an exclusive lock held while it runs
 * (the kernel drops it when the process dies, even by kill -9). */
static int lock_data_dir(const char *dir, char *err, size_t err_size)
{
    char path[4096];
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "cannot create %.300s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, LOCK_FILE);
    int fd = lock_file(path);
    if (fd < 0 && errno == EWOULDBLOCK)
        snprintf(err, err_size, "another paysim is using %.300s", dir);
    else if (fd < 0)
        snprintf(err, err_size, "cannot lock %.300s: %s", path, strerror(errno));
    return fd; /* kept open for the life of the process */
}

static int cmd_serve(int argc, char **argv)
{
    struct args a;
    if (parse_args(argc, argv, &a) != 0) {
        usage();
        return 2;
    }
    if (!a.secret)
        a.secret = getenv("PAYSIM_SECRET");
    char host[256];
    int port = 0;
    if (!a.listen || !a.data_dir || !a.secret || !*a.secret) {
        fprintf(stderr, "paysim: --listen, --data-dir and --secret are required\n");
        usage();
        return 2;
    }
    if (parse_listen(a.listen, host, sizeof(host), &port) != 0) {
        fprintf(stderr, "paysim: --listen %s: expected HOST:PORT\n", a.listen);
        return 2;
    }
    int threads = THREADS_DEFAULT;
    if (a.threads) {
        char *end;
        long n = strtol(a.threads, &end, 10);
        if (*end || n < 1 || n > THREADS_MAX) {
            fprintf(stderr, "paysim: --threads must be 1 to %d\n", THREADS_MAX);
            return 2;
        }
        threads = (int)n;
    }
    int64_t delays[NOTIFY_DELAYS_MAX];
    int delay_count = 0;
    if (parse_delays(a.notify_delays ? a.notify_delays : default_delays, delays,
                     &delay_count) != 0) {
        fprintf(stderr, "paysim: --notify-delays: expected at most %d seconds (0 to %d), "
                        "comma-separated\n", NOTIFY_DELAYS_MAX, DELAY_MAX_S);
        return 2;
    }
    if (a.notify_url && !model_url_valid(a.notify_url)) {
        fprintf(stderr, "paysim: --notify-url must be an http:// or https:// URL\n");
        return 2;
    }

    /* Before any thread: signals go to sigwait() below. */
    sigset_t sigs;
    signals_block_stop(&sigs);

    char err[512];
    if (lock_data_dir(a.data_dir, err, sizeof(err)) < 0) {
        fprintf(stderr, "paysim: %s\n", err);
        return 1;
    }
    PAYD_ASSERT(curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK);
    journal *j = journal_open(a.data_dir, a.notify_url, threads + 2, err, sizeof(err));
    if (!j) {
        fprintf(stderr, "paysim: %s\n", err);
        return 1;
    }
    faults *f = faults_new();
    timer *t = timer_start();
    holder *h = hold_start();
    struct api_config cfg = {.secret = a.secret, .journal = j, .faults = f, .timer = t,
                             .holder = h};
    api *ap = api_new(&cfg);
    struct srv_options so = {.host = host, .port = port, .threads = threads,
                             .max_body_bytes = MAX_BODY_BYTES, .head = api_head,
                             .dispatch = api_dispatch, .app = ap};
    srv *s = srv_start(&so, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "paysim: %s\n", err);
        return 1;
    }
    notifier *nf = notifier_start(j, a.secret, delays, delay_count);
    journal_set_listener(j, notifier_wake, nf);

    bool v6 = strchr(host, ':') != NULL;
    log_line("listening on %s%s%s:%d, journal %s/%s, %d threads, %d notification retries",
             v6 ? "[" : "", host, v6 ? "]" : "", srv_port(s), a.data_dir, JOURNAL_FILE,
             threads, delay_count);
    printf("http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "", srv_port(s));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    log_line("signal %d: stopping", sig);
    srv_quiesce(s);
    timer_stop(t);  /* requests waiting out a latency: 503, nothing done */
    hold_stop(h);   /* held connections: closed */
    srv_stop(s, SHUTDOWN_GRACE_MS); /* journal writes in flight: answered */
    notifier_stop(nf);
    journal_close(j);
    api_free(ap);
    hold_free(h);
    timer_free(t);
    faults_free(f);
    curl_global_cleanup();
    log_line("stopped");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "journal") == 0)
        return cmd_journal(argc - 2, argv + 2);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage();
        return 0;
    }
    return cmd_serve(argc - 1, argv + 1);
}
