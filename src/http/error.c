/*
 * error.c - the API's error object (see server.h): one answer shape for every
 * refusal, shared by the server and the fuzz targets' in-memory request.
 */
#include <stdlib.h>

#include "http/server.h"
#include "util/util.h"

/* A JSON string of s. Messages may quote what a client sent, cut to fit a
 * buffer (a field's name, the JSON parser's account of where it broke), so
 * s may not be UTF-8; jansson refuses such a string, and an answer that
 * cannot be made stops payd. Its bytes outside ASCII then show as '?'. */
static json_t *error_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *ascii = xstrdup(s);
    for (char *p = ascii; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(ascii);
    free(ascii);
    return j;
}

void http_error(http_req *r, int status, const char *type, const char *code,
                const char *message, const char *param)
{
    json_t *err = json_pack("{s:s, s:s, s:o}", "type", type, "code", code, "message",
                            error_text(message));
    if (param)
        json_object_set_new(err, "param", error_text(param));
    http_respond_json(r, status, json_pack("{s:o}", "error", err));
}
