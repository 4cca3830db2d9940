/*
 * orders.h - the order-facts cache.
 *
 * What a payment needs of its order (the merchant it belongs to, its amount
 * and currency) never changes once the order exists, so it can be cached
 * without invalidation: a payment request then needs no database read on
 * its way to the write, which checks the order's status itself. The cache
 * is direct-mapped and bounded; a miss is answered by the store.
 */
#ifndef PAYD_CACHE_ORDERS_H
#define PAYD_CACHE_ORDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ids.h"

struct order_facts {
    char id[ID_MAX];
    char merchant_id[ID_MAX];
    int64_t amount_minor;
    char currency[4];
    int64_t created_ms; /* an order cannot close before created_ms + [orders] ttl_s */
};

typedef struct order_cache order_cache;

order_cache *order_cache_new(size_t slots);
void order_cache_free(order_cache *c);
void order_cache_put(order_cache *c, const struct order_facts *f);
/* True and *out filled when the order is cached. */
bool order_cache_get(order_cache *c, const char *id, struct order_facts *out);

#endif
