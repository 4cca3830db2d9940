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
 */
#ifndef PAYD_CACHE_KEYS_H
#define PAYD_CACHE_KEYS_H

#include <stdbool.h>
#include <stddef.h>

#include "core/model.h"

typedef struct key_cache key_cache;

/* The identity of the epoch file at one moment. */
struct key_epoch {
    unsigned long long dev, ino;
    long long size; /* one byte per change */
    bool exists;
};

key_cache *key_cache_new(const char *data_dir, size_t slots);
void key_cache_free(key_cache *c);

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
