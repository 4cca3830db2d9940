/*
 * ids.h - identifiers.
 *
 * Object ids are a type prefix and 26 characters of Crockford base32 that
 * encode 48 bits of wall-clock milliseconds and 80 random bits, so they sort
 * roughly by creation and cannot be guessed. Serial numbers (the key a
 * channel deduplicates a charge by) are 28 decimal digits: the UTC date and
 * time to the second, then 14 random digits. API keys are "sk_" and 48 hex
 * digits of randomness.
 */
#ifndef PAYD_CORE_IDS_H
#define PAYD_CORE_IDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ID_BODY_LEN 26
#define ID_MAX 40        /* prefix (at most 12 bytes) + body + NUL fits */
#define SERIAL_NO_LEN 28
#define API_KEY_LEN 51   /* "sk_" + 48 hex */

/* Writes prefix + a new id into out (ID_MAX bytes). prefix is like "ord_". */
void id_new(const char *prefix, int64_t wall_ms, char out[ID_MAX]);

/* True when s is prefix followed by exactly ID_BODY_LEN base32 characters. */
bool id_valid(const char *prefix, const char *s);

/* Writes a new serial number (SERIAL_NO_LEN digits and a NUL). */
void serial_no_new(int64_t wall_ms, char out[SERIAL_NO_LEN + 1]);

/* Writes a new API key (API_KEY_LEN characters and a NUL). */
void api_key_new(char out[API_KEY_LEN + 1]);

/* Hex SHA-256 of an API key, as stored (65 bytes with the NUL). */
void api_key_hash(const char *key, char out[65]);

#endif
