/*
 * idem.c - request fingerprints and the in-flight key table; see idem.h.
 *
 * The in-flight table is an open-addressing hash set of SHA-256 digests of
 * "merchant_id \0 key", behind one mutex: it is touched twice per keyed
 * request, for well under a microsecond each time.
 */
#include "core/idem.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "util/util.h"

void idem_fingerprint(const char *method, const char *path, const char *canonical_body,
                      char out[IDEM_FINGERPRINT_LEN + 1])
{
    uint8_t digest[32];
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    PAYD_ASSERT(ctx);
    PAYD_ASSERT(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    EVP_DigestUpdate(ctx, method, strlen(method) + 1);
    EVP_DigestUpdate(ctx, path, strlen(path) + 1);
    EVP_DigestUpdate(ctx, canonical_body, strlen(canonical_body));
    PAYD_ASSERT(EVP_DigestFinal_ex(ctx, digest, &len) == 1 && len == 32);
    EVP_MD_CTX_free(ctx);
    hex_encode(digest, 32, out);
}

struct slot {
    uint8_t digest[32];
    enum { SLOT_EMPTY, SLOT_USED, SLOT_DELETED } state;
};

struct idem_inflight {
    pthread_mutex_t mu;
    size_t capacity; /* a power of two */
    size_t used;     /* used slots, at most capacity / 2 */
    size_t deleted;  /* tombstones; the table is rebuilt past capacity / 4 */
    struct slot *slots;
    struct slot *spare; /* scratch of the same size, for rebuilding */
};

idem_inflight *idem_inflight_new(size_t capacity)
{
    idem_inflight *t = xcalloc(1, sizeof(*t));
    size_t cap = 16;
    while (cap < capacity * 2)
        cap *= 2;
    t->capacity = cap;
    t->slots = xcalloc(cap, sizeof(struct slot));
    t->spare = xcalloc(cap, sizeof(struct slot));
    pthread_mutex_init(&t->mu, NULL);
    return t;
}

void idem_inflight_free(idem_inflight *t)
{
    if (!t)
        return;
    pthread_mutex_destroy(&t->mu);
    free(t->slots);
    free(t->spare);
    free(t);
}

static void key_digest(const char *merchant_id, const char *key, uint8_t out[32])
{
    unsigned int len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    PAYD_ASSERT(ctx);
    PAYD_ASSERT(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1);
    EVP_DigestUpdate(ctx, merchant_id, strlen(merchant_id) + 1);
    EVP_DigestUpdate(ctx, key, strlen(key));
    PAYD_ASSERT(EVP_DigestFinal_ex(ctx, out, &len) == 1);
    EVP_MD_CTX_free(ctx);
}

/* Returns the slot holding digest, or NULL; *free_slot gets the first empty
 * or deleted slot seen on the probe path. Called with the mutex held. */
static struct slot *probe(idem_inflight *t, const uint8_t digest[32], struct slot **free_slot)
{
    uint64_t h;
    memcpy(&h, digest, sizeof(h));
    *free_slot = NULL;
    for (size_t i = 0; i < t->capacity; i++) {
        struct slot *s = &t->slots[(h + i) & (t->capacity - 1)];
        if (s->state == SLOT_EMPTY) {
            if (!*free_slot)
                *free_slot = s;
            return NULL;
        }
        if (s->state == SLOT_DELETED) {
            if (!*free_slot)
                *free_slot = s;
            continue;
        }
        if (memcmp(s->digest, digest, 32) == 0)
            return s;
    }
    return NULL;
}

/* Drops the tombstones by inserting every used slot again into the spare
 * array, which then becomes the table. Called with the mutex held. */
static void rebuild(idem_inflight *t)
{
    struct slot *old = t->slots;
    t->slots = t->spare;
    t->spare = old;
    memset(t->slots, 0, t->capacity * sizeof(struct slot));
    for (size_t i = 0; i < t->capacity; i++) {
        if (old[i].state != SLOT_USED)
            continue;
        struct slot *free_slot;
        PAYD_ASSERT(!probe(t, old[i].digest, &free_slot) && free_slot);
        *free_slot = old[i];
    }
    t->deleted = 0;
}

int idem_inflight_enter(idem_inflight *t, const char *merchant_id, const char *key)
{
    uint8_t digest[32];
    key_digest(merchant_id, key, digest);
    int rc = 0;
    pthread_mutex_lock(&t->mu);
    struct slot *free_slot;
    if (probe(t, digest, &free_slot)) {
        rc = -1;
    } else if (t->used >= t->capacity / 2 || !free_slot) {
        rc = -2;
    } else {
        if (free_slot->state == SLOT_DELETED)
            t->deleted--;
        memcpy(free_slot->digest, digest, 32);
        free_slot->state = SLOT_USED;
        t->used++;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void idem_inflight_leave(idem_inflight *t, const char *merchant_id, const char *key)
{
    uint8_t digest[32];
    key_digest(merchant_id, key, digest);
    pthread_mutex_lock(&t->mu);
    struct slot *free_slot;
    struct slot *s = probe(t, digest, &free_slot);
    PAYD_ASSERT(s); /* leaving a key that never entered is a bug */
    s->state = SLOT_DELETED;
    t->used--;
    t->deleted++;
    if (t->deleted > t->capacity / 4)
        rebuild(t);
    pthread_mutex_unlock(&t->mu);
}
