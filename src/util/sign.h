/*
 * sign.h - the HMAC-SHA256 signature of paysim's protocol (docs/paysim.md), on
 * every request to a PSP that speaks it and every notification from one:
 * payd's http channel signs with it, paysim checks and signs with it.
 *
 * Both directions are signed the same way: the header Paysim-Timestamp holds
 * the Unix time in seconds (decimal digits), and Paysim-Signature holds the
 * lower-case hex of HMAC-SHA256(secret, timestamp + "." + raw body). A GET
 * signs an empty body. A timestamp more than SIGN_WINDOW_S away from the
 * clock, either way, is stale.
 */
#ifndef PAYD_UTIL_SIGN_H
#define PAYD_UTIL_SIGN_H

#include <stddef.h>
#include <stdint.h>

#define SIGN_HEADER_TIMESTAMP "Paysim-Timestamp"
#define SIGN_HEADER_SIGNATURE "Paysim-Signature"
#define SIGN_WINDOW_S 300
#define SIGN_HEX_LEN 64

enum sign_check {
    SIGN_OK = 0,
    SIGN_MISSING = -1,   /* a header is absent */
    SIGN_MALFORMED = -2, /* the timestamp is not digits, or the signature not 64 hex */
    SIGN_STALE = -3,     /* the timestamp is outside the window */
    SIGN_MISMATCH = -4,  /* well-formed, but not the secret's signature */
};

/* The signature of (timestamp, body) into out (65 bytes, lower-case hex). */
void sign_compute(const char *secret, const char *timestamp, const char *body, size_t body_len,
                  char out[SIGN_HEX_LEN + 1]);

/* Checks the two header values (either may be NULL) against the body at
 * now_s. Compares in constant time; accepts upper-case hex. */
enum sign_check sign_verify(const char *secret, const char *timestamp, const char *signature,
                            const char *body, size_t body_len, int64_t now_s);

#endif
