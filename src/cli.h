/*
 * cli.h - what payd's commands and payctl share: their options, building
 * the configuration (defaults < file < PAYD_* environment < flags), and
 * opening the store it names.
 */
#ifndef PAYD_CLI_H
#define PAYD_CLI_H

#include <stdint.h>

#include "conf.h"
#include "store/store.h"

struct cli_args {
    const char *config;
    const char *listen;
    const char *data_dir;
    const char *log_format;
    const char *date;    /* payctl reconcile */
    const char *channel; /* payctl reconcile */
    const char *positional[4];
    int positional_count;
};

/* Reads the options; -1 (said on stderr as PROG: …) on a bad command line. */
int cli_parse_args(const char *prog, int argc, char **argv, struct cli_args *a);

/* Builds the configuration; -1 (said on stderr) when it is refused. */
int cli_load_conf(const char *prog, const struct cli_args *a, struct conf *conf);

/* Opens the configured store; NULL (said on stderr) on failure. */
store *cli_open_store(const char *prog, const struct conf *conf,
                      void (*on_commit)(void *, int, int64_t), void *arg);

#endif
