/*
 * statements.c - GET /v1/statements?date=YYYY-MM-DD: the daily statement
 * (对账单) of one UTC day, as JSON lines (docs/paysim.md).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "api_internal.h"

/* A real calendar date from 1970 on; its first millisecond (UTC). */
static bool parse_date(const char *s, int64_t *day_start_ms)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
            return false;
    struct tm tm = {0};
    tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') -
                 1900;
    tm.tm_mon = (s[5] - '0') * 10 + (s[6] - '0') - 1;
    tm.tm_mday = (s[8] - '0') * 10 + (s[9] - '0');
    int year = tm.tm_year, mon = tm.tm_mon, mday = tm.tm_mday;
    time_t t = timegm(&tm);
    /* timegm normalises 02-30 into March: a real date survives unchanged. */
    if (t < 0 || tm.tm_year != year || tm.tm_mon != mon || tm.tm_mday != mday)
        return false;
    *day_start_ms = (int64_t)t * 1000;
    return true;
}

bool statements_prepare(struct call *c)
{
    const char *date = http_query(c->r, "date");
    if (!date || !parse_date(date, &c->day_start_ms)) {
        api_bad_request(c, "date must be a calendar date, YYYY-MM-DD (UTC)", "date");
        return false;
    }
    snprintf(c->date, sizeof(c->date), "%s", date);
    return true;
}

void statements_get(struct call *c)
{
    size_t len = 0;
    char *text = journal_statement(c->api->cfg.journal, c->day_start_ms, c->date, &len);
    if (!text)
        api_answer_error(c, 500, "system_error", "paysim's journal failed", NULL);
    else
        api_answer_raw(c, 200, "application/x-ndjson", text, len);
    api_deliver(c);
}
