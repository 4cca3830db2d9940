/*
 * idem.h - idempotency keys, with Stripe's semantics.
 *
 * A request carries an Idempotency-Key; its fingerprint is the SHA-256 of
 * its method, path and canonical body. The store keeps (merchant, key) ->
 * (fingerprint, status, body) for completed requests, under a unique
 * constraint; this module adds the in-flight table, which says that a
 * request with a key is being handled right now, so that a concurrent one
 * with the same key is answered 409 idempotency_key_in_use instead of racing.
 *
 * The in-flight table is per process and bounded; the store's unique
 * constraint is the guard that holds across processes.
 */
#ifndef PAYD_CORE_IDEM_H
#define PAYD_CORE_IDEM_H

#include <stdbool.h>
#include <stddef.h>

#define IDEM_FINGERPRINT_LEN 64

/* Writes the hex fingerprint (65 bytes with the NUL). */
void idem_fingerprint(const char *method, const char *path, const char *canonical_body,
                      char out[IDEM_FINGERPRINT_LEN + 1]);

typedef struct idem_inflight idem_inflight;

idem_inflight *idem_inflight_new(size_t capacity);
void idem_inflight_free(idem_inflight *t);

/* Marks (merchant_id, key) in flight. Returns 0, or -1 when it already is,
 * or -2 when the table is full (the caller sheds the request). */
int idem_inflight_enter(idem_inflight *t, const char *merchant_id, const char *key);

/* Clears a mark made by idem_inflight_enter. */
void idem_inflight_leave(idem_inflight *t, const char *merchant_id, const char *key);

#endif
