/*
 * log.h - paysim's log: one line on stderr per merchant request,
 * notification attempt or change of the faults (docs/paysim.md, "Command
 * line"). Never the secret.
 */
#ifndef PAYSIM_LOG_H
#define PAYSIM_LOG_H

/* One line on stderr: "paysim: <RFC 3339 time> <message>". */
void log_line(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
