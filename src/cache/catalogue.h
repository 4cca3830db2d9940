/*
 * catalogue.h - the channel catalogue (GET /v1/channels) as its rendered
 * body, kept until the catalogue changes. A change (a breaker's state)
 * bumps the generation, and the next reader renders it again.
 */
#ifndef PAYD_CACHE_CATALOGUE_H
#define PAYD_CACHE_CATALOGUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct catalogue_cache catalogue_cache;

catalogue_cache *catalogue_cache_new(void);
void catalogue_cache_free(catalogue_cache *c);

/* Drops the cached body (any thread). */
void catalogue_cache_invalidate(catalogue_cache *c);

/* A copy of the cached body (malloc'd, *len set), or NULL when there is
 * none; then *gen is the generation to pass to catalogue_cache_put. */
char *catalogue_cache_get(catalogue_cache *c, size_t *len, uint64_t *gen);
/* Keeps body (copied) unless the catalogue changed since gen was read. */
void catalogue_cache_put(catalogue_cache *c, uint64_t gen, const char *body, size_t len);

/* How many times the body was rendered (for tests and the admin view). */
uint64_t catalogue_cache_renders(catalogue_cache *c);

#endif
