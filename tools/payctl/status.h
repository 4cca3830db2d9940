/*
 * status.h - payctl status (status.c): a two-site deployment's components,
 * their roles and health.
 */
#ifndef PAYD_PAYCTL_STATUS_H
#define PAYD_PAYCTL_STATUS_H

/* Prints one line per component of the topology file; 0 when all are
 * healthy, 1 when one is not, 2 when the file cannot be read. */
int payctl_status(const char *topology_path);

#endif
