/*
 * netaddr.c - the kinds of IP addresses; see netaddr.h.
 */
#include "util/netaddr.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* An IPv4 address in host order against prefix/len. */
static bool in4(uint32_t a, uint32_t prefix, int len)
{
    uint32_t mask = len == 0 ? 0 : 0xffffffffu << (32 - len);
    return (a & mask) == (prefix & mask);
}

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

static enum addr_kind kind4(uint32_t a)
{
    if (in4(a, V4(127, 0, 0, 0), 8))
        return ADDR_LOOPBACK;
    if (in4(a, V4(10, 0, 0, 0), 8) || in4(a, V4(172, 16, 0, 0), 12) ||
        in4(a, V4(192, 168, 0, 0), 16) || in4(a, V4(100, 64, 0, 0), 10))
        return ADDR_PRIVATE;
    if (in4(a, V4(169, 254, 0, 0), 16))
        return ADDR_LINK_LOCAL;
    if (in4(a, V4(0, 0, 0, 0), 8) ||       /* "this network" */
        in4(a, V4(192, 0, 0, 0), 24) ||    /* IETF protocol assignments */
        in4(a, V4(192, 0, 2, 0), 24) ||    /* documentation */
        in4(a, V4(198, 51, 100, 0), 24) || /* documentation */
        in4(a, V4(203, 0, 113, 0), 24) ||  /* documentation */
        in4(a, V4(198, 18, 0, 0), 15) ||   /* benchmarking */
        in4(a, V4(224, 0, 0, 0), 4) ||     /* multicast */
        in4(a, V4(240, 0, 0, 0), 4))       /* reserved, and the broadcast address */
        return ADDR_RESERVED;
    return ADDR_PUBLIC;
}

static uint32_t v4_at(const uint8_t *b)
{
    return V4(b[0], b[1], b[2], b[3]);
}

static enum addr_kind kind6(const uint8_t b[16])
{
    static const uint8_t zero[16], loopback[16] = {[15] = 1};
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
    static const uint8_t nat64[12] = {0x00, 0x64, 0xff, 0x9b};
    if (memcmp(b, loopback, 16) == 0)
        return ADDR_LOOPBACK;
    if (memcmp(b, zero, 16) == 0)
        return ADDR_RESERVED;
    if (memcmp(b, mapped, 12) == 0 || memcmp(b, nat64, 12) == 0)
        return kind4(v4_at(b + 12));
    if (memcmp(b, zero, 12) == 0) /* IPv4-compatible ::a.b.c.d (deprecated) */
        return kind4(v4_at(b + 12));
    if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 */
        return kind4(v4_at(b + 2));
    if ((b[0] & 0xfe) == 0xfc)
        return ADDR_PRIVATE; /* unique local fc00::/7 */
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return ADDR_LINK_LOCAL;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return ADDR_PRIVATE; /* site-local fec0::/10 (deprecated) */
    if (b[0] == 0xff)
        return ADDR_RESERVED; /* multicast */
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return ADDR_RESERVED; /* documentation 2001:db8::/32 */
    if ((b[0] & 0xe0) != 0x20)
        return ADDR_RESERVED; /* outside global unicast 2000::/3 (discard 100::/64 too) */
    return ADDR_PUBLIC;
}

enum addr_kind addr_kind_of(const char *ip)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (!ip)
        return ADDR_INVALID;
    if (inet_pton(AF_INET, ip, &a4) == 1)
        return kind4(ntohl(a4.s_addr));
    if (inet_pton(AF_INET6, ip, &a6) == 1)
        return kind6(a6.s6_addr);
    return ADDR_INVALID;
}

enum addr_kind addr_kind_of_host(const char *name)
{
    char host[256];
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= sizeof(host))
        return ADDR_PUBLIC; /* not an address: left to the resolver */
    if (name[0] == '[') {
        const char *end = strchr(name, ']');
        if (!end)
            return ADDR_PUBLIC;
        snprintf(host, sizeof(host), "%.*s", (int)(end - name - 1), name + 1);
        char *zone = strchr(host, '%'); /* fe80::1%eth0 */
        if (zone)
            *zone = '\0';
        enum addr_kind k = addr_kind_of(host);
        return k == ADDR_INVALID ? ADDR_PUBLIC : k;
    }
    snprintf(host, sizeof(host), "%s", name);
    if (host[n - 1] == '.') /* an absolute name: "localhost." */
        host[--n] = '\0';
    static const char dot_localhost[] = ".localhost";
    size_t dl = sizeof(dot_localhost) - 1;
    if (strcasecmp(host, "localhost") == 0 ||
        (n > dl && strcasecmp(host + n - dl, dot_localhost) == 0))
        return ADDR_LOOPBACK;
    /* inet_aton takes every IPv4 form the resolver does (127.1, 0x7f.1,
     * 2130706433), which inet_pton does not. */
    struct in_addr a4;
    if (inet_aton(host, &a4))
        return kind4(ntohl(a4.s_addr));
    enum addr_kind k = addr_kind_of(host); /* an IPv6 address without brackets */
    return k == ADDR_INVALID ? ADDR_PUBLIC : k;
}

int addr_kind_of_url(const char *url, enum addr_kind *kind)
{
    CURLU *u = curl_url();
    char *host = NULL;
    int rc = -1;
    if (u && url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, CURLU_URLDECODE) == CURLUE_OK && host && host[0]) {
        *kind = addr_kind_of_host(host);
        rc = 0;
    }
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

const char *addr_kind_name(enum addr_kind k)
{
    switch (k) {
    case ADDR_PUBLIC:
        return "public";
    case ADDR_LOOPBACK:
        return "loopback";
    case ADDR_PRIVATE:
        return "private";
    case ADDR_LINK_LOCAL:
        return "link-local";
    case ADDR_RESERVED:
        return "reserved";
    case ADDR_INVALID:
        break;
    }
    return "invalid";
}
