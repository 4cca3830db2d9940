/*
 * local.c - the in-process lock table (embedded mode); see lock.h.
 *
 * Keys hash into a fixed number of shards, each a mutex, a condition
 * variable and a small open hash table of live leases. An expired lease is
 * simply a free slot: whoever asks next takes it with a new, larger token.
 * Tokens come from one atomic counter that starts above the largest fence
 * the store holds.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "core/ids.h"
#include "lock/lock.h"
#include "util/util.h"

#define SHARDS 1024
#define SLOTS_PER_SHARD 32 /* live leases per shard at most; past it: busy */

struct lease {
    char key[ID_MAX];
    int64_t token;
    int64_t expires_mono_ms; /* 0: free slot */
};

struct shard {
    pthread_mutex_t mu;
    pthread_cond_t released;
    struct lease slots[SLOTS_PER_SHARD];
};

struct local_lock {
    lock_service base;
    _Atomic int64_t next_token;
    struct shard shards[SHARDS];
};

static struct shard *shard_of(struct local_lock *l, const char *key, uint64_t *h)
{
    *h = hash_str(key);
    return &l->shards[*h % SHARDS];
}

/* The live lease on key, or NULL; *free_slot gets a reusable slot. Called
 * with the shard's mutex held. */
static struct lease *find(struct shard *sh, const char *key, int64_t now_ms,
                          struct lease **free_slot)
{
    *free_slot = NULL;
    for (int i = 0; i < SLOTS_PER_SHARD; i++) {
        struct lease *le = &sh->slots[i];
        if (le->expires_mono_ms <= now_ms) {
            le->expires_mono_ms = 0;
            if (!*free_slot)
                *free_slot = le;
            continue;
        }
        if (strcmp(le->key, key) == 0)
            return le;
    }
    return NULL;
}

static int local_acquire(lock_service *base, const char *key, int64_t ttl_ms, int64_t wait_ms,
                         int64_t *token)
{
    struct local_lock *l = (struct local_lock *)base;
    PAYD_ASSERT(strlen(key) < ID_MAX && ttl_ms > 0);
    uint64_t h;
    struct shard *sh = shard_of(l, key, &h);
    int64_t deadline_ms = clock_mono_ms() + wait_ms;
    int rc = LOCK_E_BUSY;

    pthread_mutex_lock(&sh->mu);
    for (;;) {
        int64_t now_ms = clock_mono_ms();
        struct lease *free_slot;
        struct lease *held = find(sh, key, now_ms, &free_slot);
        if (!held && free_slot) {
            snprintf(free_slot->key, sizeof(free_slot->key), "%s", key);
            free_slot->token = atomic_fetch_add(&l->next_token, 1);
            free_slot->expires_mono_ms = now_ms + ttl_ms;
            *token = free_slot->token;
            rc = LOCK_OK;
            break;
        }
        if (now_ms >= deadline_ms) {
            if (!held)
                rc = LOCK_E_FULL;
            break;
        }
        /* Wait for a release, or for the holder's lease to run out. */
        int64_t until_ms = deadline_ms;
        if (held && held->expires_mono_ms < until_ms)
            until_ms = held->expires_mono_ms;
        struct timespec ts;
        clock_deadline(until_ms - now_ms, &ts);
        pthread_cond_timedwait(&sh->released, &sh->mu, &ts);
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int local_renew(lock_service *base, const char *key, int64_t token, int64_t ttl_ms)
{
    struct local_lock *l = (struct local_lock *)base;
    uint64_t h;
    struct shard *sh = shard_of(l, key, &h);
    int rc = LOCK_E_LOST;
    pthread_mutex_lock(&sh->mu);
    int64_t now_ms = clock_mono_ms();
    struct lease *free_slot;
    struct lease *held = find(sh, key, now_ms, &free_slot);
    if (held && held->token == token) {
        held->expires_mono_ms = now_ms + ttl_ms;
        rc = LOCK_OK;
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static int local_release(lock_service *base, const char *key, int64_t token)
{
    struct local_lock *l = (struct local_lock *)base;
    uint64_t h;
    struct shard *sh = shard_of(l, key, &h);
    int rc = LOCK_E_LOST;
    pthread_mutex_lock(&sh->mu);
    struct lease *free_slot;
    struct lease *held = find(sh, key, clock_mono_ms(), &free_slot);
    if (held && held->token == token) {
        held->expires_mono_ms = 0;
        rc = LOCK_OK;
        pthread_cond_broadcast(&sh->released);
    }
    pthread_mutex_unlock(&sh->mu);
    return rc;
}

static void local_free(lock_service *base)
{
    struct local_lock *l = (struct local_lock *)base;
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_destroy(&l->shards[i].mu);
        pthread_cond_destroy(&l->shards[i].released);
    }
    free(l);
}

static const struct lock_backend local_backend = {
    .name = "local",
    .acquire = local_acquire,
    .renew = local_renew,
    .release = local_release,
    .free = local_free,
};

lock_service *lock_local_new(int64_t min_token)
{
    struct local_lock *l = xcalloc(1, sizeof(*l));
    l->base.be = &local_backend;
    atomic_init(&l->next_token, min_token + 1);
    for (int i = 0; i < SHARDS; i++) {
        pthread_mutex_init(&l->shards[i].mu, NULL);
        pthread_cond_init(&l->shards[i].released, NULL);
    }
    return &l->base;
}
