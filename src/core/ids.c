/*
 * ids.c - id, serial number and API key generation; see ids.h.
 */
#include "core/ids.h"

#include <openssl/sha.h>
#include <string.h>
#include <time.h>

#include "util/util.h"

static const char base32[] = "0123456789abcdefghjkmnpqrstvwxyz";

void id_new(const char *prefix, int64_t wall_ms, char out[ID_MAX])
{
    size_t plen = strlen(prefix);
    PAYD_ASSERT(plen + ID_BODY_LEN < ID_MAX);
    uint8_t rnd[10];
    rand_bytes(rnd, sizeof(rnd));

    /* 130 bits of output: 48 bits of time, then 80 random bits, 5 bits a
     * character, most significant first. */
    uint64_t t = (uint64_t)wall_ms & ((UINT64_C(1) << 48) - 1);
    char *p = out + plen;
    memcpy(out, prefix, plen);
    for (int i = 9; i >= 0; i--) {
        p[i] = base32[t & 31];
        t >>= 5;
    }
    uint64_t hi = 0, lo = 0;
    for (int i = 0; i < 5; i++)
        hi = hi << 8 | rnd[i];
    for (int i = 5; i < 10; i++)
        lo = lo << 8 | rnd[i];
    for (int i = 7; i >= 0; i--) {
        p[10 + i] = base32[hi & 31];
        hi >>= 5;
        p[18 + i] = base32[lo & 31];
        lo >>= 5;
    }
    p[ID_BODY_LEN] = '\0';
}

bool id_valid(const char *prefix, const char *s)
{
    size_t plen = strlen(prefix);
    if (strncmp(s, prefix, plen) != 0 || strlen(s) != plen + ID_BODY_LEN)
        return false;
    for (const char *p = s + plen; *p; p++)
        if (!strchr(base32, *p))
            return false;
    return true;
}

void serial_no_new(int64_t wall_ms, char out[SERIAL_NO_LEN + 1])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    uint8_t rnd[14];
    rand_bytes(rnd, sizeof(rnd));
    int n = snprintf(out, SERIAL_NO_LEN + 1, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    PAYD_ASSERT(n == 14);
    /* 250 is the largest multiple of 10 below 256: reject above it so that
     * every digit is uniform. */
    for (int i = 0; i < 14; i++) {
        while (rnd[i] >= 250)
            rand_bytes(&rnd[i], 1);
        out[14 + i] = (char)('0' + rnd[i] % 10);
    }
    out[SERIAL_NO_LEN] = '\0';
}

void api_key_new(char out[API_KEY_LEN + 1])
{
    uint8_t rnd[24];
    rand_bytes(rnd, sizeof(rnd));
    memcpy(out, "sk_", 3);
    hex_encode(rnd, sizeof(rnd), out + 3);
}

void api_key_hash(const char *key, char out[65])
{
    uint8_t digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), digest);
    hex_encode(digest, sizeof(digest), out);
}
