/*
 * channel.c - the set of configured channels; see channel.h.
 */
#include "channel/channel.h"

#include <stdlib.h>
#include <string.h>

#include "util/util.h"

struct channel_set {
    int count;
    channel *channels[CONF_CHANNELS_MAX];
};

void chan_statement_free(struct chan_statement *st)
{
    free(st->items);
    st->items = NULL;
    st->count = 0;
}

bool channel_method_valid(const channel *ch, const char *method)
{
    for (const char *const *m = ch->methods; *m; m++)
        if (strcmp(*m, method) == 0)
            return true;
    return false;
}

channel_set *channel_set_new(const struct conf *conf, char *err, size_t err_size)
{
    channel_set *set = xcalloc(1, sizeof(*set));
    for (int i = 0; i < conf->channel_count; i++) {
        const struct conf_channel *cc = &conf->channels[i];
        channel *ch = NULL;
        switch ((enum channel_type)cc->type) {
        case CHANNEL_TYPE_SANDBOX:
            ch = channel_sandbox_new(cc, conf->data_dir, err, err_size);
            break;
        case CHANNEL_TYPE_HTTP:
            ch = channel_http_new(cc, err, err_size);
            break;
        default:
            PAYD_ASSERT(!"unknown channel type");
        }
        if (!ch) {
            channel_set_free(set);
            return NULL;
        }
        set->channels[set->count++] = ch;
    }
    return set;
}

void channel_set_free(channel_set *set)
{
    if (!set)
        return;
    for (int i = 0; i < set->count; i++)
        set->channels[i]->be->free(set->channels[i]);
    free(set);
}

int channel_set_index(const channel_set *set, const char *name)
{
    for (int i = 0; i < set->count; i++)
        if (strcmp(set->channels[i]->name, name) == 0)
            return i;
    return -1;
}

channel *channel_set_find(channel_set *set, const char *name)
{
    int i = channel_set_index(set, name);
    return i >= 0 ? set->channels[i] : NULL;
}

int channel_set_count(const channel_set *set)
{
    return set->count;
}

channel *channel_set_at(channel_set *set, int i)
{
    PAYD_ASSERT(i >= 0 && i < set->count);
    return set->channels[i];
}
