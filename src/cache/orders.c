/*
 * orders.c - see orders.h. Slots are guarded by a fixed set of mutex
 * stripes; a put overwrites whatever held its slot.
 */
#include "cache/orders.h"

#include <pthread.h>
#include <string.h>

#include "util/util.h"

#define STRIPES 64

struct order_cache {
    size_t slots;
    struct order_facts *entries; /* id[0] == '\0': empty */
    pthread_mutex_t stripes[STRIPES];
};

static size_t slot_of(const order_cache *c, const char *id)
{
    return (size_t)(hash_str(id) % c->slots);
}

order_cache *order_cache_new(size_t slots)
{
    PAYD_ASSERT(slots > 0);
    order_cache *c = xcalloc(1, sizeof(*c));
    c->slots = slots;
    c->entries = xcalloc(slots, sizeof(*c->entries));
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_init(&c->stripes[i], NULL);
    return c;
}

void order_cache_free(order_cache *c)
{
    if (!c)
        return;
    for (int i = 0; i < STRIPES; i++)
        pthread_mutex_destroy(&c->stripes[i]);
    free(c->entries);
    free(c);
}

void order_cache_put(order_cache *c, const struct order_facts *f)
{
    size_t i = slot_of(c, f->id);
    pthread_mutex_lock(&c->stripes[i % STRIPES]);
    c->entries[i] = *f;
    pthread_mutex_unlock(&c->stripes[i % STRIPES]);
}

bool order_cache_get(order_cache *c, const char *id, struct order_facts *out)
{
    size_t i = slot_of(c, id);
    pthread_mutex_lock(&c->stripes[i % STRIPES]);
    bool hit = c->entries[i].id[0] != '\0' && strcmp(c->entries[i].id, id) == 0;
    if (hit)
        *out = c->entries[i];
    pthread_mutex_unlock(&c->stripes[i % STRIPES]);
    return hit;
}
