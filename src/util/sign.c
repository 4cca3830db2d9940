/*
 * sign.c - HMAC-SHA256 over "timestamp.body"; see sign.h.
 */
#include "util/sign.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

#include "util/util.h"

#define TIMESTAMP_DIGITS_MAX 12

void sign_compute(const char *secret, const char *timestamp, const char *body, size_t body_len,
                  char out[SIGN_HEX_LEN + 1])
{
    size_t ts_len = strlen(timestamp);
    size_t len = ts_len + 1 + body_len;
    unsigned char *msg = xmalloc(len);
    memcpy(msg, timestamp, ts_len);
    msg[ts_len] = '.';
    if (body_len)
        memcpy(msg + ts_len + 1, body, body_len);
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    PAYD_ASSERT(HMAC(EVP_sha256(), secret, (int)strlen(secret), msg, len, mac, &mac_len));
    PAYD_ASSERT(mac_len == SIGN_HEX_LEN / 2);
    hex_encode(mac, mac_len, out);
    free(msg);
}

enum sign_check sign_verify(const char *secret, const char *timestamp, const char *signature,
                            const char *body, size_t body_len, int64_t now_s)
{
    if (!timestamp || !signature || !*timestamp || !*signature)
        return SIGN_MISSING;
    size_t ts_len = strlen(timestamp);
    if (ts_len > TIMESTAMP_DIGITS_MAX || strlen(signature) != SIGN_HEX_LEN)
        return SIGN_MALFORMED;
    int64_t ts = 0;
    for (size_t i = 0; i < ts_len; i++) {
        if (!isdigit((unsigned char)timestamp[i]))
            return SIGN_MALFORMED;
        ts = ts * 10 + (timestamp[i] - '0');
    }
    char given[SIGN_HEX_LEN + 1];
    for (size_t i = 0; i < SIGN_HEX_LEN; i++) {
        if (!isxdigit((unsigned char)signature[i]))
            return SIGN_MALFORMED;
        given[i] = (char)tolower((unsigned char)signature[i]);
    }
    given[SIGN_HEX_LEN] = '\0';
    if (ts < now_s - SIGN_WINDOW_S || ts > now_s + SIGN_WINDOW_S)
        return SIGN_STALE;
    char want[SIGN_HEX_LEN + 1];
    sign_compute(secret, timestamp, body, body_len, want);
    return CRYPTO_memcmp(want, given, SIGN_HEX_LEN) == 0 ? SIGN_OK : SIGN_MISMATCH;
}
