/*
 * money.h - amounts and currencies.
 *
 * An amount is an int64 count of a currency's minor units (fen, cents); no
 * floating point comes near money. Currencies are ISO 4217 alphabetic codes
 * from one table; the X.. codes (precious metals, testing, "no currency")
 * are not currencies a payment can be made in and are not in it.
 */
#ifndef PAYD_CORE_MONEY_H
#define PAYD_CORE_MONEY_H

#include <stdbool.h>
#include <stdint.h>

/* The largest amount an order may carry: 10^15 minor units. */
#define MONEY_AMOUNT_MAX INT64_C(1000000000000000)

/* A known currency: its code and how many decimal places its minor unit has. */
struct currency {
    char code[4];
    int exponent;
};

/* Returns the currency for an upper-case ISO 4217 code, or NULL. */
const struct currency *money_currency_find(const char *code);

/* True when amount_minor is a valid order amount (1 ... MONEY_AMOUNT_MAX). */
bool money_amount_valid(int64_t amount_minor);

/* Adds b to *a; returns 0, or -1 (and leaves *a alone) on int64 overflow. */
int money_add(int64_t *a, int64_t b);

#endif
