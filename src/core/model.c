/*
 * model.c - comparisons on domain records; see model.h.
 */
#include "core/model.h"

#include <string.h>

bool order_same_content(const struct order *a, const struct order *b)
{
    if (a->amount_minor != b->amount_minor || strcmp(a->currency, b->currency) != 0)
        return false;
    if (a->has_description != b->has_description)
        return false;
    return !a->has_description || strcmp(a->description, b->description) == 0;
}
