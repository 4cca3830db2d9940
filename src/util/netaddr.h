/*
 * netaddr.h - what kind of address an IP address is: whether a server that
 * payd calls on a merchant's behalf (a webhook endpoint) may have it.
 *
 * A merchant chooses its webhook URL, and payd POSTs to it from inside the
 * operator's network. Without a check, a URL naming 127.0.0.1, a private
 * range or the cloud's metadata address (169.254.169.254) makes payd send
 * requests into that network for whoever holds a merchant key (server-side
 * request forgery). The check runs on the address the connection really
 * goes to, so a name that resolves to such an address is caught too.
 */
#ifndef PAYD_UTIL_NETADDR_H
#define PAYD_UTIL_NETADDR_H

#include <stdbool.h>
#include <stddef.h>

enum addr_kind {
    ADDR_PUBLIC,     /* a unicast address of the public Internet */
    ADDR_LOOPBACK,   /* 127.0.0.0/8, ::1, and the name localhost */
    ADDR_PRIVATE,    /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
    ADDR_LINK_LOCAL, /* 169.254/16 (cloud metadata), fe80::/10 */
    ADDR_RESERVED,   /* unspecified, multicast, documentation, benchmarking, reserved */
    ADDR_INVALID     /* not an address */
};

/* The kind of a numeric address, IPv4 or IPv6. An IPv6 address that
 * carries an IPv4 one (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::/96, 6to4
 * 2002::/16) is of that IPv4 address's kind. */
enum addr_kind addr_kind_of(const char *ip);

/* The kind of a URL's host as libcurl reads it: an address (IPv4 in any
 * form the resolver takes, e.g. 127.1 or 2130706433; [IPv6], with or
 * without a zone) or localhost; ADDR_PUBLIC for any other name, whose
 * address is known only when it is resolved. */
enum addr_kind addr_kind_of_host(const char *host);

/* The kind of the host of `url`, found by libcurl's own URL parser (so a
 * percent-encoded or otherwise unusual host reads as curl will connect to
 * it); -1 when curl cannot parse the URL or it has no host. */
int addr_kind_of_url(const char *url, enum addr_kind *kind);

/* "loopback", "private", ... (for error messages). */
const char *addr_kind_name(enum addr_kind k);

#endif
