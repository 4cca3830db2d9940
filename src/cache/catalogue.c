/*
 * catalogue.c - see catalogue.h.
 */
#include "cache/catalogue.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "util/util.h"

struct catalogue_cache {
    pthread_mutex_t mu;
    uint64_t gen;
    char *body; /* NULL: nothing cached */
    size_t len;
    atomic_uint_fast64_t renders;
};

catalogue_cache *catalogue_cache_new(void)
{
    catalogue_cache *c = xcalloc(1, sizeof(*c));
    pthread_mutex_init(&c->mu, NULL);
    return c;
}

void catalogue_cache_free(catalogue_cache *c)
{
    if (!c)
        return;
    free(c->body);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

void catalogue_cache_invalidate(catalogue_cache *c)
{
    pthread_mutex_lock(&c->mu);
    c->gen++;
    free(c->body);
    c->body = NULL;
    pthread_mutex_unlock(&c->mu);
}

char *catalogue_cache_get(catalogue_cache *c, size_t *len, uint64_t *gen)
{
    char *copy = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->body) {
        copy = xstrndup(c->body, c->len);
        *len = c->len;
    }
    *gen = c->gen;
    pthread_mutex_unlock(&c->mu);
    return copy;
}

void catalogue_cache_put(catalogue_cache *c, uint64_t gen, const char *body, size_t len)
{
    atomic_fetch_add(&c->renders, 1);
    pthread_mutex_lock(&c->mu);
    if (c->gen == gen && !c->body) {
        c->body = xstrndup(body, len);
        c->len = len;
    }
    pthread_mutex_unlock(&c->mu);
}

uint64_t catalogue_cache_renders(catalogue_cache *c)
{
    return atomic_load(&c->renders);
}
