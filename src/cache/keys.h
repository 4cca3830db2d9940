/*
 * keys.h - the API-key cache: key hash -> merchant.
 *
 * Every /v1/ request is authenticated; reading the merchant from the store
 * each time cost a database read per request. Keys change only through the
 * merchant commands, which may run in another process; after each change
 * they append one byte to the file DIR/merchants.epoch, so its size counts
 * the changes. The cache compares that file's identity and size (one
 * stat(2)) with those it was filled under and empties itself when they
 * differ, so a rotated key stops working as soon as the command has
 * returned. Only successful lookups are cached.
 *
 * In cluster mode each instance has its own data directory, so the epoch
 * file does not reach the others: the commands also broadcast the change
 * (Redis pub/sub), on which each instance calls key_cache_invalidate. As a
 * pub/sub message can be lost, entries then also have a maximum age
 * (key_cache_set_max_age_ms), which bounds how long a rotated key can
 * outlive its rotation whatever happens to the message.
 */
#ifndef PAYD_CACHE_KEYS_H
#define PAYD_CACHE_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/model.h"

typedef struct key_cache key_cache;

/* The identity of the epoch file at one moment, and the cache's own count
 * of invalidations. */
struct key_epoch {
    unsigned long long dev, ino;
    long long size; /* one byte per change */
    bool exists;
    uint64_t invalidations;
};

key_cache *key_cache_new(const char *data_dir, size_t slots);
void key_cache_free(key_cache *c);

/* Entries older than max_age_ms are not used (0, the default: no limit).
 * Set once, before the cache is shared. */
void key_cache_set_max_age_ms(key_cache *c, int64_t max_age_ms);

/* Empties the cache (any thread); a lookup that began before this is not
 * cached by its put. */
void key_cache_invalidate(key_cache *c);

/* Reads the epoch file's identity now. */
void key_cache_epoch(key_cache *c, struct key_epoch *out);

/* True and *out filled when key_hash is cached under the current epoch
 * (*epoch receives that epoch, for a later put). */
bool key_cache_get(key_cache *c, const char *key_hash, struct merchant *out,
                   struct key_epoch *epoch);

/* Caches a lookup made after `epoch` was read; dropped if the epoch moved. */
void key_cache_put(key_cache *c, const char *key_hash, const struct merchant *m,
                   const struct key_epoch *epoch);

/* Appends to DIR/merchants.epoch; the merchant commands call it after each
 * committed change. 0 or -1. */
int key_cache_bump_epoch(const char *data_dir);

#endif
