/*
 * keys.c - see keys.h.
 *
 * An invalidation counts in the epoch like a change of the file, so the
 * check that keeps a racing lookup's put out of the cache covers both.
 */
#include "cache/keys.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

struct key_entry {
    char key_hash[65]; /* "" when empty */
    struct merchant merchant;
    int64_t filled_ms; /* monotonic; read only with a maximum age */
};

struct key_cache {
    char epoch_path[1100];
    int64_t max_age_ms; /* 0: entries do not age */
    _Atomic uint64_t invalidations;
    pthread_mutex_t mu;
    struct key_epoch epoch; /* what the entries were filled under */
    size_t slots;
    struct key_entry *entries;
};

static bool epoch_equal(const struct key_epoch *a, const struct key_epoch *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size && a->invalidations == b->invalidations;
}

void key_cache_epoch(key_cache *c, struct key_epoch *out)
{
    struct stat st;
    memset(out, 0, sizeof(*out));
    out->invalidations = atomic_load(&c->invalidations);
    if (stat(c->epoch_path, &st) != 0)
        return;
    out->exists = true;
    out->dev = (unsigned long long)st.st_dev;
    out->ino = (unsigned long long)st.st_ino;
    out->size = (long long)st.st_size;
}

key_cache *key_cache_new(const char *data_dir, size_t slots)
{
    key_cache *c = xcalloc(1, sizeof(*c));
    snprintf(c->epoch_path, sizeof(c->epoch_path), "%s/merchants.epoch", data_dir);
    pthread_mutex_init(&c->mu, NULL);
    c->slots = slots;
    c->entries = xcalloc(slots, sizeof(*c->entries));
    key_cache_epoch(c, &c->epoch);
    return c;
}

void key_cache_set_max_age_ms(key_cache *c, int64_t max_age_ms)
{
    PAYD_ASSERT(max_age_ms >= 0);
    c->max_age_ms = max_age_ms;
}

void key_cache_invalidate(key_cache *c)
{
    pthread_mutex_lock(&c->mu);
    /* Entries and epoch move together, under mu: a put made under the
     * previous count no longer matches. */
    c->epoch.invalidations = atomic_fetch_add(&c->invalidations, 1) + 1;
    memset(c->entries, 0, c->slots * sizeof(*c->entries));
    pthread_mutex_unlock(&c->mu);
}

void key_cache_free(key_cache *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    free(c->entries);
    free(c);
}

static size_t slot_of(const key_cache *c, const char *key_hash)
{
    uint64_t h = 0;
    for (int i = 0; i < 16; i++) /* the hash is already uniform hex */
        h = h << 4 | (uint64_t)(key_hash[i] <= '9' ? key_hash[i] - '0' : key_hash[i] - 'a' + 10);
    return (size_t)(h % c->slots);
}

bool key_cache_get(key_cache *c, const char *key_hash, struct merchant *out,
                   struct key_epoch *epoch)
{
    key_cache_epoch(c, epoch);
    size_t i = slot_of(c, key_hash);
    /* The clock is read only when entries age (cluster mode). */
    int64_t fresh_after_ms = c->max_age_ms ? clock_mono_ms() - c->max_age_ms : INT64_MIN;
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    if (!epoch_equal(&c->epoch, epoch)) {
        memset(c->entries, 0, c->slots * sizeof(*c->entries));
        c->epoch = *epoch;
    } else if (strcmp(c->entries[i].key_hash, key_hash) == 0 &&
               c->entries[i].filled_ms > fresh_after_ms) {
        *out = c->entries[i].merchant;
        hit = true;
    }
    pthread_mutex_unlock(&c->mu);
    return hit;
}

void key_cache_put(key_cache *c, const char *key_hash, const struct merchant *m,
                   const struct key_epoch *epoch)
{
    size_t i = slot_of(c, key_hash);
    int64_t now_ms = c->max_age_ms ? clock_mono_ms() : 0;
    pthread_mutex_lock(&c->mu);
    if (epoch_equal(&c->epoch, epoch)) {
        snprintf(c->entries[i].key_hash, sizeof(c->entries[i].key_hash), "%s", key_hash);
        c->entries[i].merchant = *m;
        c->entries[i].filled_ms = now_ms;
    }
    pthread_mutex_unlock(&c->mu);
}

int key_cache_bump_epoch(const char *data_dir)
{
    char path[1100];
    snprintf(path, sizeof(path), "%s/merchants.epoch", data_dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd < 0)
        return -1;
    bool ok = write(fd, "+", 1) == 1;
    close(fd);
    return ok ? 0 : -1;
}
