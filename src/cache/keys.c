/*
 * keys.c - see keys.h.
 */
#include "cache/keys.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/util.h"

struct key_entry {
    char key_hash[65]; /* "" when empty */
    struct merchant merchant;
};

struct key_cache {
    char epoch_path[1100];
    pthread_mutex_t mu;
    struct key_epoch epoch; /* what the entries were filled under */
    size_t slots;
    struct key_entry *entries;
};

static bool epoch_equal(const struct key_epoch *a, const struct key_epoch *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
           a->size == b->size;
}

void key_cache_epoch(key_cache *c, struct key_epoch *out)
{
    struct stat st;
    memset(out, 0, sizeof(*out));
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
    bool hit = false;
    pthread_mutex_lock(&c->mu);
    if (!epoch_equal(&c->epoch, epoch)) {
        memset(c->entries, 0, c->slots * sizeof(*c->entries));
        c->epoch = *epoch;
    } else if (strcmp(c->entries[i].key_hash, key_hash) == 0) {
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
    pthread_mutex_lock(&c->mu);
    if (epoch_equal(&c->epoch, epoch)) {
        snprintf(c->entries[i].key_hash, sizeof(c->entries[i].key_hash), "%s", key_hash);
        c->entries[i].merchant = *m;
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
