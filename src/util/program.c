/*
 * program.c - command-line options, stop signals, lock file; see program.h.
 */
#include "util/program.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

int args_parse(const char *prog, int argc, char **argv, const struct arg_option *opts,
               size_t opt_count, const char **positional, int positional_max)
{
    int positional_count = 0;
    for (int i = 0; i < argc; i++) {
        const char **target = NULL;
        for (size_t k = 0; k < opt_count && !target; k++)
            if (strcmp(argv[i], opts[k].name) == 0)
                target = opts[k].value;
        if (target) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value\n", prog, argv[i]);
                return -1;
            }
            *target = argv[++i];
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "%s: unknown option %s\n", prog, argv[i]);
            return -1;
        } else if (positional_count < positional_max) {
            positional[positional_count++] = argv[i];
        } else {
            fprintf(stderr, "%s: too many arguments\n", prog);
            return -1;
        }
    }
    return positional_count;
}

void signals_block_stop(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    pthread_sigmask(SIG_BLOCK, set, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int lock_file(const char *path)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}
