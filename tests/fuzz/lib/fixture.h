/*
 * fixture.h - the payd the HTTP fuzz targets send their requests to: one
 * per process, made on first use, torn down at exit.
 *
 * It is payd's embedded mode wired as payd.c wires it, minus the server
 * and the background threads that act on their own (workers, refunder,
 * webhook senders, housekeeper, monitor), so that only the request under
 * test changes anything: a SQLite store in a fresh temporary directory
 * (under $PAYD_FUZZ_TMPDIR, else $TMPDIR, else /tmp), the in-process lock,
 * the caches, the guards (the adaptive limit off: requests run one at a
 * time), the metrics, and two channels: "sandbox" and "psp" (type http,
 * signing secret FUZZ_PSP_SECRET; never called, since no worker runs).
 *
 * The store holds fixed records that corpus files can name:
 *
 *   merchant A (FUZZ_KEY_A)  order OPEN   pending_payment, 1000 CNY: a payment can be made
 *                            order PAID   paid by payment PAID (psp, 10^12 CNY, serial
 *                                         FUZZ_SERIAL_PAID), which refunds can take from;
 *                                         refund PROC of it is processing (FUZZ_REFUND_NO_PROC)
 *                            order PROC   payment PROC processing (psp, 5000 USD, serial
 *                                         FUZZ_SERIAL_PROC): a notification can settle it
 *   merchant B (FUZZ_KEY_B)  order OTHER  payment OTHER (sandbox): never visible to A
 *
 * /admin/ takes FUZZ_ADMIN_KEY. The request under test may change these
 * records as payd allows (pay OPEN, refund PAID, settle PROC), so later
 * inputs of a run may see them changed: the targets' checks hold either
 * way.
 */
#ifndef PAYD_TESTS_FUZZ_FIXTURE_H
#define PAYD_TESTS_FUZZ_FIXTURE_H

#include "app.h"

#define FUZZ_KEY_A "sk_fuzz_merchant_a_0123456789abcdef0123456789abcdef"
#define FUZZ_KEY_B "sk_fuzz_merchant_b_0123456789abcdef0123456789abcdef"
#define FUZZ_ADMIN_KEY "admin_fuzz_0123456789abcdef"
#define FUZZ_PSP_SECRET "psp_fuzz_secret_0123456789abcdef"

#define FUZZ_MERCHANT_A "mch_0000000000000000000000000a"
#define FUZZ_MERCHANT_B "mch_0000000000000000000000000b"
#define FUZZ_ORDER_OPEN "ord_00000000000000000000000001"
#define FUZZ_ORDER_PAID "ord_00000000000000000000000002"
#define FUZZ_ORDER_PROC "ord_00000000000000000000000003"
#define FUZZ_ORDER_OTHER "ord_00000000000000000000000009"
#define FUZZ_PAYMENT_PAID "pay_00000000000000000000000002"
#define FUZZ_PAYMENT_PROC "pay_00000000000000000000000003"
#define FUZZ_PAYMENT_OTHER "pay_00000000000000000000000009"
#define FUZZ_REFUND_PROC "re_00000000000000000000000002"
#define FUZZ_SERIAL_PAID "2024010100000000000000000002"
#define FUZZ_SERIAL_PROC "2024010100000000000000000003"
#define FUZZ_SERIAL_OTHER "2024010100000000000000000009"
#define FUZZ_REFUND_NO_PROC "2024010100000000000000000102"
#define FUZZ_PAID_AMOUNT 1000000000000LL
#define FUZZ_PROC_AMOUNT 5000
#define FUZZ_REFUND_PROC_AMOUNT 100

/* The fixture's payd (made on the first call); aborts when it cannot be
 * made. */
struct app *fuzz_app(void);

/* A guards set of its own (its own data directory), for PUT /admin/guards:
 * what a change sets there never limits the fixture's requests. */
guards *fuzz_scratch_guards(void);

/* The fixture's temporary directory. */
const char *fuzz_tmpdir(void);

#endif
