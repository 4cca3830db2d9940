/*
 * program.h - what the main programs (payd, src/payd.c, and paysim,
 * tools/paysim/paysim.c) do alike: read "--name VALUE" options from the
 * command line, take SIGTERM and SIGINT in sigwait(), and hold a lock file
 * for the life of the process.
 */
#ifndef PAYD_UTIL_PROGRAM_H
#define PAYD_UTIL_PROGRAM_H

#include <signal.h>
#include <stddef.h>

/* An option that takes a value: "--name VALUE". */
struct arg_option {
    const char *name;   /* "--listen" */
    const char **value; /* set to the argument after the name (the last one given wins) */
};

/* Reads argv[0 .. argc): the options in opts (opt_count of them) with their
 * values, and up to positional_max other arguments (not starting with '-'),
 * in order, into positional (may be NULL when positional_max is 0). Returns
 * how many positional arguments there were, or -1 after saying what is
 * wrong on stderr ("PROG: --listen needs a value", "PROG: unknown option
 * --x", "PROG: too many arguments"). */
int args_parse(const char *prog, int argc, char **argv, const struct arg_option *opts,
               size_t opt_count, const char **positional, int positional_max);

/* Blocks SIGTERM and SIGINT, in the calling thread and every thread it
 * starts afterwards (call it before any), so that sigwait(set) takes them
 * and none is lost to another thread; and ignores SIGPIPE: a write to a
 * closed socket is an error, not a death. */
void signals_block_stop(sigset_t *set);

/* Opens path (created with mode 0600 when missing) and locks it
 * exclusively, without waiting. The lock lasts as long as the descriptor
 * is open: keep it for the life of the process; the kernel drops it when
 * the process dies, also by kill -9. Returns the descriptor, or -1 with
 * errno (EWOULDBLOCK: another process holds the lock). */
int lock_file(const char *path);

#endif
