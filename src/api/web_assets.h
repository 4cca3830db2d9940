/*
 * web_assets.h - the dashboard's files (web/ and uPlot from npm), compiled
 * in by scripts/embed_web.sh so that payd serves them with nothing beside
 * it and no CDN.
 */
#ifndef PAYD_API_WEB_ASSETS_H
#define PAYD_API_WEB_ASSETS_H

#include <stddef.h>

struct web_asset {
    const char *path; /* as requested, e.g. "/dashboard/dashboard.js" */
    const char *content_type;
    const unsigned char *data;
    size_t len;
};

extern const struct web_asset web_assets[];
extern const int web_asset_count;

#endif
