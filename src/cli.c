/*
 * cli.c - see cli.h.
 */
#include "cli.h"

#include <stdio.h>
#include <string.h>

#include "util/program.h"
#include "util/util.h"

int cli_parse_args(const char *prog, int argc, char **argv, struct cli_args *a)
{
    memset(a, 0, sizeof(*a));
    const struct arg_option opts[] = {
        {"--config", &a->config},     {"--listen", &a->listen}, {"--data-dir", &a->data_dir},
        {"--log-format", &a->log_format}, {"--date", &a->date},  {"--channel", &a->channel},
    };
    int n = args_parse(prog, argc, argv, opts, ARRAY_LEN(opts), a->positional,
                       (int)ARRAY_LEN(a->positional));
    if (n < 0)
        return -1;
    a->positional_count = n;
    return 0;
}

int cli_load_conf(const char *prog, const struct cli_args *a, struct conf *conf)
{
    char err[CONF_ERR_MAX];
    conf_defaults(conf);
    if (a->config && conf_load_file(conf, a->config, err) != 0)
        goto out_err;
    if (conf_load_env(conf, err) != 0)
        goto out_err;
    if (a->listen && conf_set(conf, "server", "listen", a->listen, err) != 0)
        goto out_err;
    if (a->data_dir && conf_set(conf, "server", "data_dir", a->data_dir, err) != 0)
        goto out_err;
    if (a->log_format && conf_set(conf, "log", "format", a->log_format, err) != 0)
        goto out_err;
    if (conf_finish(conf, err) != 0)
        goto out_err;
    return 0;
out_err:
    fprintf(stderr, "%s: %s\n", prog, err);
    return -1;
}

store *cli_open_store(const char *prog, const struct conf *conf,
                      void (*on_commit)(void *, int, int64_t), void *arg)
{
    char err[512];
    struct store_options opts = {
        .data_dir = conf->data_dir,
        .url = conf->store_url,
        .pool_size = (int)conf->store_pool_size,
        .writers = (int)conf->store_writers,
        .max_batch = (int)conf->store_max_batch,
        .queue_capacity = (int)conf->store_queue_capacity,
        .on_commit = on_commit,
        .on_commit_arg = arg,
    };
    const char *backend = conf->store_backend == STORE_BACKEND_POSTGRES ? "postgres" : "sqlite";
    store *s = store_open(backend, &opts, err, sizeof(err));
    if (!s)
        fprintf(stderr, "%s: %s\n", prog, err);
    return s;
}
