/*
 * test_netaddr.c - util: the kinds of addresses a webhook may not reach.
 */
#include "../testutil.h"

#include "util/netaddr.h"

struct case_ {
    const char *text;
    enum addr_kind kind;
};

static void check(const struct case_ *cases, size_t n, enum addr_kind (*fn)(const char *))
{
    for (size_t i = 0; i < n; i++)
        if (fn(cases[i].text) != cases[i].kind)
            fail_msg("%s: %s, want %s", cases[i].text, addr_kind_name(fn(cases[i].text)),
                     addr_kind_name(cases[i].kind));
}

static void test_ipv4(void **state)
{
    (void)state;
    static const struct case_ cases[] = {
        {"8.8.8.8", ADDR_PUBLIC},
        {"1.1.1.1", ADDR_PUBLIC},
        {"172.15.255.255", ADDR_PUBLIC}, /* just below 172.16/12 */
        {"172.32.0.0", ADDR_PUBLIC},     /* just above it */
        {"100.63.255.255", ADDR_PUBLIC}, /* just below 100.64/10 */
        {"100.128.0.0", ADDR_PUBLIC},    /* just above it */
        {"169.253.255.255", ADDR_PUBLIC},
        {"223.255.255.255", ADDR_PUBLIC}, /* the last unicast address */
        {"127.0.0.1", ADDR_LOOPBACK},
        {"127.255.255.254", ADDR_LOOPBACK},
        {"10.0.0.1", ADDR_PRIVATE},
        {"172.16.0.1", ADDR_PRIVATE},
        {"172.31.255.255", ADDR_PRIVATE},
        {"192.168.1.1", ADDR_PRIVATE},
        {"100.64.0.1", ADDR_PRIVATE},
        {"169.254.169.254", ADDR_LINK_LOCAL}, /* cloud metadata */
        {"0.0.0.0", ADDR_RESERVED},
        {"192.0.2.1", ADDR_RESERVED},
        {"198.18.0.1", ADDR_RESERVED},
        {"203.0.113.9", ADDR_RESERVED},
        {"224.0.0.1", ADDR_RESERVED},
        {"255.255.255.255", ADDR_RESERVED},
        {"", ADDR_INVALID},
        {"256.1.1.1", ADDR_INVALID},
        {"example.com", ADDR_INVALID},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]), addr_kind_of);
    assert_int_equal(addr_kind_of(NULL), ADDR_INVALID);
}

static void test_ipv6(void **state)
{
    (void)state;
    static const struct case_ cases[] = {
        {"2001:4860:4860::8888", ADDR_PUBLIC},
        {"2606:4700::1111", ADDR_PUBLIC},
        {"::1", ADDR_LOOPBACK},
        {"::", ADDR_RESERVED},
        {"::ffff:127.0.0.1", ADDR_LOOPBACK}, /* IPv4-mapped */
        {"::ffff:10.1.2.3", ADDR_PRIVATE},
        {"::ffff:8.8.8.8", ADDR_PUBLIC},
        {"64:ff9b::169.254.169.254", ADDR_LINK_LOCAL}, /* NAT64 */
        {"2002:7f00:1::", ADDR_LOOPBACK},              /* 6to4 of 127.0.0.1 */
        {"::127.0.0.1", ADDR_LOOPBACK},                /* IPv4-compatible */
        {"fc00::1", ADDR_PRIVATE},
        {"fd12:3456::1", ADDR_PRIVATE},
        {"fe80::1", ADDR_LINK_LOCAL},
        {"febf::1", ADDR_LINK_LOCAL},
        {"fec0::1", ADDR_PRIVATE},
        {"ff02::1", ADDR_RESERVED},
        {"2001:db8::1", ADDR_RESERVED},
        {"100::1", ADDR_RESERVED},
        {"fe7f::1", ADDR_RESERVED},     /* below fe80::/10, outside 2000::/3 */
        {"2001:db9::1", ADDR_PUBLIC},   /* just above 2001:db8::/32 */
        {"::1:2:3", ADDR_RESERVED}, /* ::/8, not global unicast */
        {"4000::1", ADDR_RESERVED}, /* outside 2000::/3 */
        {"3fff:ffff::1", ADDR_PUBLIC},
        {"fe80::1::2", ADDR_INVALID},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]), addr_kind_of);
}

static enum addr_kind url_kind(const char *url)
{
    enum addr_kind kind = ADDR_INVALID;
    if (addr_kind_of_url(url, &kind) != 0)
        return ADDR_INVALID;
    return kind;
}

static void test_url_host(void **state)
{
    (void)state;
    static const struct case_ cases[] = {
        {"https://shop.example/hooks", ADDR_PUBLIC}, /* a name: known when resolved */
        {"https://8.8.8.8/hooks", ADDR_PUBLIC},
        {"http://127.0.0.1:8080/admin/guards", ADDR_LOOPBACK},
        {"http://127.1/", ADDR_LOOPBACK},      /* the resolver's short form */
        {"http://2130706433/", ADDR_LOOPBACK}, /* 127.0.0.1 as one number */
        {"http://0x7f.0.0.1/", ADDR_LOOPBACK}, /* hexadecimal */
        {"http://0/", ADDR_RESERVED},          /* 0.0.0.0: this host */
        {"http://%31%32%37.0.0.1/", ADDR_LOOPBACK}, /* percent-encoded */
        {"http://localhost:9000/x", ADDR_LOOPBACK},
        {"http://LOCALHOST./x", ADDR_LOOPBACK},
        {"http://api.localhost/x", ADDR_LOOPBACK},
        {"http://user:pw@10.0.0.5/x", ADDR_PRIVATE}, /* userinfo is not the host */
        {"http://10.0.0.5@shop.example/x", ADDR_PUBLIC},
        {"http://169.254.169.254/latest/meta-data", ADDR_LINK_LOCAL},
        {"http://[::1]:8080/", ADDR_LOOPBACK},
        {"http://[::]/", ADDR_RESERVED},
        {"http://[fe80::1%25eth0]/", ADDR_LINK_LOCAL},
        {"http://[::ffff:192.168.0.1]/", ADDR_PRIVATE},
        {"https://[2001:4860:4860::8888]/", ADDR_PUBLIC},
        {"http://shop.example?u=http://127.0.0.1/", ADDR_PUBLIC},
        {"http://", ADDR_INVALID}, /* no host: curl cannot parse it */
        {"http://[::1/", ADDR_INVALID},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]), url_kind);
}

static void test_host(void **state)
{
    (void)state;
    static const struct case_ cases[] = {
        {"shop.example", ADDR_PUBLIC},
        {"[::1]", ADDR_LOOPBACK},
        {"::1", ADDR_LOOPBACK},
        {"127.0.0.1", ADDR_LOOPBACK},
        {"localhost", ADDR_LOOPBACK},
        {"", ADDR_PUBLIC},
    };
    check(cases, sizeof(cases) / sizeof(cases[0]), addr_kind_of_host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_url_host),
        cmocka_unit_test(test_host),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
