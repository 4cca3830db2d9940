/*
 * testutil.h - helpers shared by the unit tests: temporary directories and
 * files, and cmocka's includes in the order it needs them.
 *
 * Every function is static inline so that a test file that uses none of them
 * still compiles under -Werror. Each test binary is built from one .c file,
 * so there is nothing to link.
 */
#ifndef PAYD_TESTS_UNIT_TESTUTIL_H
#define PAYD_TESTS_UNIT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four above first. */
#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TEST_PATH_MAX 512

/* Creates a fresh directory under $TMPDIR (or /tmp) and writes its path into
 * out (TEST_PATH_MAX bytes). Fails the test when it cannot. */
static inline void test_tmpdir(char out[TEST_PATH_MAX])
{
    const char *base = getenv("TMPDIR");
    int n = snprintf(out, TEST_PATH_MAX, "%s/payd-unit-XXXXXX", base && *base ? base : "/tmp");
    assert_true(n > 0 && n < TEST_PATH_MAX);
    assert_non_null(mkdtemp(out));
}

static inline int test_rm_one(const char *path, const struct stat *sb, int flag,
                              struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes a directory made by test_tmpdir, with everything in it. */
static inline void test_rmtree(const char *dir)
{
    nftw(dir, test_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text to dir/name and the full path into out (TEST_PATH_MAX bytes). */
static inline void test_write_file(const char *dir, const char *name, const char *text,
                                   char out[TEST_PATH_MAX])
{
    int n = snprintf(out, TEST_PATH_MAX, "%s/%s", dir, name);
    assert_true(n > 0 && n < TEST_PATH_MAX);
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

#endif
