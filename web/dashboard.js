/*
 * payd's live dashboard. Once a second it asks payd for GET /dashboard/data
 * (the first time without since_ms, which answers with the history payd
 * keeps; after that with since_ms = the time of the newest point it has, which
 * answers with the newer samples only), appends the new one-second samples to
 * columns it keeps for at most WINDOW_MS, and redraws the charts (uPlot) and
 * the tiles and tables. When a fetch fails it says so in a banner and keeps
 * trying; the first answer that comes back hides the banner again.
 *
 * window.payd = {charts, last, online} is for tests and curious operators:
 * the uPlot instances by name, the last JSON answer and whether the last
 * fetch worked.
 *
 * Plain ES2017 with no build step; every string from the server is put into
 * the page as text, never as HTML.
 */
(function () {
    'use strict';

    var REFRESH_MS = 1000;      // one fetch a second, the server's sample interval
    var FETCH_TIMEOUT_MS = 3000;
    var WINDOW_MS = 15 * 60 * 1000;

    var GREEN = '#1a7f37', AMBER = '#bf8700', RED = '#cf222e', BLUE = '#0969da',
        PURPLE = '#8250df', GREY = '#6e7781', BROWN = '#953800';

    var intFmt = new Intl.NumberFormat('en-US', {maximumFractionDigits: 0});
    var compactFmt = new Intl.NumberFormat('en-US', {notation: 'compact',
                                                    maximumFractionDigits: 2});

    function fmtInt(v) { return v == null ? '–' : intFmt.format(v); }
    function fmtRate(v) {
        if (v == null) return '–';
        return Math.abs(v) < 10 && v !== Math.round(v) ? v.toFixed(1) : intFmt.format(v);
    }
    function fmtMs(v) {
        if (v == null) return '–';
        if (v < 1) return v.toFixed(2);
        if (v < 100) return v.toFixed(1);
        return intFmt.format(v);
    }
    function fmtRatio(v) {
        if (v == null) return '–';
        var pct = v * 100;
        return (pct !== 0 && pct < 10 ? pct.toFixed(2) : pct.toFixed(1)) + '%';
    }
    function fmtDuration(s) {
        if (s == null) return '–';
        s = Math.max(0, Math.round(s));
        if (s < 60) return s + ' s';
        if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
        return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    }
    function fmtClock(ms) {
        var d = new Date(ms);
        function two(n) { return (n < 10 ? '0' : '') + n; }
        return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
    }

    function fmtPctAxis(v) { return +(v * 100).toFixed(2) + '%'; }

    /*
     * The charts: each names the JSON series it draws (keys of "series"), how
     * it formats a value in its legend (fmt) and, when uPlot's own numbers will
     * not do, on its y axis (axisFmt), and the least top of its y axis (so that
     * a flat zero line sits at the bottom of a sensible scale).
     */
    var CHARTS = [
        {name: 'qps', fmt: fmtRate, minTop: 1, series: [
            {key: 'qps', label: 'requests/s', stroke: BLUE, fill: 'rgba(9,105,218,0.08)'}]},
        {name: 'latency', fmt: fmtMs, minTop: 1, series: [
            {key: 'p50_ms', label: 'p50', stroke: BLUE},
            {key: 'p99_ms', label: 'p99', stroke: PURPLE}]},
        {name: 'error_ratio', fmt: fmtRatio, axisFmt: fmtPctAxis, minTop: 0.01, maxTop: 1, series: [
            {key: 'error_ratio', label: '5xx', stroke: RED, fill: 'rgba(207,34,46,0.08)'}]},
        {name: 'payments', fmt: fmtRate, minTop: 1, series: [
            {key: 'succeeded_per_s', label: 'succeeded', stroke: GREEN},
            {key: 'failed_per_s', label: 'failed', stroke: RED},
            {key: 'accepted_per_s', label: 'accepted', stroke: GREY, dash: [4, 4]}]},
        {name: 'queue_depth', fmt: fmtInt, minTop: 5, series: [
            {key: 'queue_depth', label: 'depth', stroke: AMBER, fill: 'rgba(191,135,0,0.08)'}]},
        {name: 'rejected', fmt: fmtRate, minTop: 1, series: [
            {key: 'rejected_per_s', label: 'rejected/s', stroke: BROWN,
             fill: 'rgba(149,56,0,0.08)'}]}
    ];

    /* The samples the page holds, one column per series key, oldest first. */
    var cols = {t_ms: []};
    CHARTS.forEach(function (c) {
        c.series.forEach(function (s) { cols[s.key] = []; });
    });

    var state = {
        charts: {},
        last: null,
        online: false,
        lastOkMs: null
    };
    window.payd = state;

    function $(id) { return document.getElementById(id); }

    function el(tag, cls, text) {
        var e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text != null) e.textContent = text;
        return e;
    }

    /* ---- charts ---- */

    function lastValue(arr) {
        for (var i = arr.length - 1; i >= 0; i--)
            if (arr[i] != null) return arr[i];
        return null;
    }

    /* The caption's legend: a swatch, the label and a value per series. */
    function buildLegend(c, fig) {
        var box = el('span', 'legend');
        c.valueEls = c.series.map(function (s) {
            var item = el('span', 'item');
            var sw = el('span', 'swatch' + (s.dash ? ' dashed' : ''));
            sw.style.borderColor = s.stroke;
            item.appendChild(sw);
            item.appendChild(el('span', 'name', s.label));
            var v = el('span', 'val', '–');
            item.appendChild(v);
            box.appendChild(item);
            return v;
        });
        fig.querySelector('figcaption').appendChild(box);
    }

    /* Shows the values at the cursor, or the newest ones when there is none. */
    function updateLegend(c, idx) {
        c.series.forEach(function (s, i) {
            var arr = cols[s.key];
            var v = idx == null ? lastValue(arr) : arr[idx];
            c.valueEls[i].textContent = c.fmt(v);
        });
    }

    function makeChart(c) {
        var host = $('chart-' + c.name);
        var fig = host.parentNode;
        buildLegend(c, fig);
        var opts = {
            width: Math.max(host.clientWidth, 100),
            height: Math.max(host.clientHeight, 80),
            legend: {show: false},
            cursor: {drag: {x: false, y: false}, points: {size: 6}},
            scales: {
                x: {time: true},
                y: {
                    range: function (u, min, max) {
                        var top = max == null ? c.minTop : Math.max(max * 1.1, c.minTop);
                        if (c.maxTop != null) top = Math.min(top, c.maxTop);
                        return [0, top];
                    }
                }
            },
            axes: [
                {stroke: '#57606a', grid: {stroke: '#eaeef2', width: 1},
                 ticks: {stroke: '#d0d7de', width: 1}, font: '11px system-ui, sans-serif',
                 space: 70, size: 28,
                 values: function (u, vals) {
                     return vals.map(function (v) { return fmtClock(v * 1000); });
                 }},
                {stroke: '#57606a', grid: {stroke: '#eaeef2', width: 1},
                 ticks: {stroke: '#d0d7de', width: 1}, font: '11px system-ui, sans-serif',
                 size: 52}
            ],
            series: [{}].concat(c.series.map(function (s) {
                return {label: s.label, stroke: s.stroke, width: 1.5, fill: s.fill,
                        dash: s.dash, spanGaps: false, points: {show: false}};
            })),
            hooks: {
                setCursor: [function (u) { updateLegend(c, u.cursor.idx); }]
            }
        };
        if (c.axisFmt)
            opts.axes[1].values = function (u, vals) { return vals.map(c.axisFmt); };
        var chart = new uPlot(opts, chartData(c), host);
        state.charts[c.name] = chart;

        if (window.ResizeObserver) {
            new ResizeObserver(function () {
                var w = host.clientWidth, h = host.clientHeight;
                if (w > 0 && h > 0 && (w !== chart.width || h !== chart.height))
                    chart.setSize({width: w, height: h});
            }).observe(host);
        }
    }

    function chartData(c) {
        var x = cols.t_ms.map(function (t) { return t / 1000; });
        return [x].concat(c.series.map(function (s) { return cols[s.key].slice(); }));
    }

    function redrawCharts() {
        CHARTS.forEach(function (c) {
            var chart = state.charts[c.name];
            chart.setData(chartData(c));
            updateLegend(c, chart.cursor.idx == null || chart.cursor.idx < 0
                         ? null : chart.cursor.idx);
        });
    }

    /*
     * Appends the samples newer than the newest held; a jump of more than two
     * intervals (payd was down, or restarted) gets a row of nulls so that the
     * lines break there instead of bridging the gap. Then drops what is older
     * than WINDOW_MS before the newest sample.
     */
    function appendSeries(series, intervalMs) {
        var t = series && series.t_ms;
        if (!t || !t.length) return false;
        var added = false;
        for (var i = 0; i < t.length; i++) {
            var n = cols.t_ms.length;
            var lastT = n ? cols.t_ms[n - 1] : null;
            if (lastT != null && t[i] <= lastT) continue;
            if (lastT != null && t[i] - lastT > 2.5 * intervalMs) {
                cols.t_ms.push(lastT + intervalMs);
                for (var k in cols) if (k !== 't_ms') cols[k].push(null);
            }
            cols.t_ms.push(t[i]);
            for (var key in cols) {
                if (key === 't_ms') continue;
                var arr = series[key];
                cols[key].push(arr && arr[i] != null ? arr[i] : null);
            }
            added = true;
        }
        var newest = cols.t_ms[cols.t_ms.length - 1];
        var drop = 0;
        while (drop < cols.t_ms.length && cols.t_ms[drop] <= newest - WINDOW_MS) drop++;
        if (drop > 0)
            for (var c in cols) cols[c].splice(0, drop);
        return added;
    }

    /* ---- tiles and tables ---- */

    function setText(id, text) { $(id).textContent = text; }

    /* A tile's number: exact up to 999,999, then 1.23M (exact on hover). */
    function setTile(id, v) {
        var e = $(id);
        e.textContent = v != null && Math.abs(v) >= 1e6 ? compactFmt.format(v) : fmtInt(v);
        e.title = v == null ? '' : String(v);
    }

    function renderTiles(d) {
        var p = d.payments || {};
        setTile('pay-accepted', p.accepted);
        setTile('pay-succeeded', p.succeeded);
        setTile('pay-failed', p.failed);
        setTile('pay-processing', p.processing);

        var inf = d.inflight || {};
        setTile('inflight-current', inf.current);
        setTile('inflight-limit', inf.limit);
        var share = inf.limit > 0 ? Math.min(1, (inf.current || 0) / inf.limit) : 0;
        var bar = $('inflight-bar');
        bar.style.width = (share * 100).toFixed(1) + '%';
        bar.className = share >= 0.9 ? 'bad' : share >= 0.7 ? 'warn' : 'ok';

        var q = d.queue || {};
        setTile('queue-depth', q.depth);
        setText('queue-age', fmtDuration(q.oldest_age_s));
        setTile('queue-dead', q.dead_letters);
        $('queue-dead').classList.toggle('bad', q.dead_letters > 0);
    }

    var BREAKER_TEXT = {closed: 'closed', half_open: 'half-open', open: 'open'};

    function renderBreakers(list) {
        var body = $('breakers');
        body.textContent = '';
        if (!list || !list.length) {
            var tr = el('tr', 'empty');
            var td = el('td', null, 'no channels');
            td.colSpan = 2;
            tr.appendChild(td);
            body.appendChild(tr);
            return;
        }
        list.forEach(function (b) {
            var cls = 'breaker-' + String(b.state).replace(/_/g, '-');
            var tr = el('tr', cls);
            tr.dataset.channel = b.channel;
            tr.dataset.state = b.state;
            tr.appendChild(el('td', 'channel', b.channel));
            var td = el('td');
            td.appendChild(el('span', 'pill', BREAKER_TEXT[b.state] || String(b.state)));
            tr.appendChild(td);
            body.appendChild(tr);
        });
    }

    function renderLimiters(list) {
        var body = $('limiters');
        body.textContent = '';
        (list || []).forEach(function (l) {
            var tr = el('tr');
            tr.dataset.limiter = l.limiter;
            tr.appendChild(el('td', null, l.limiter));
            tr.appendChild(el('td', 'num', fmtInt(l.admitted)));
            tr.appendChild(el('td', 'num' + (l.rejected > 0 ? ' bad' : ''), fmtInt(l.rejected)));
            body.appendChild(tr);
        });
    }

    /*
     * Firing alerts first, then pending ones (their condition holds, their
     * `for` has not passed yet; shown muted). An alert without "state" fires.
     */
    function renderAlerts(list, nowMs) {
        var ul = $('alerts');
        ul.textContent = '';
        list = (list || []).slice();
        var pending = function (a) { return a.state === 'pending'; };
        list.sort(function (a, b) { return pending(a) - pending(b); });
        var firing = list.filter(function (a) { return !pending(a); }).length;
        setText('alerts-count', firing ? String(firing) : '');
        if (!list.length) {
            ul.appendChild(el('li', 'empty', 'no active alerts'));
            return;
        }
        list.forEach(function (a) {
            var sev = String(a.severity || 'none').toLowerCase().replace(/[^a-z0-9_-]/g, '');
            var li = el('li', 'alert sev-' + sev + (pending(a) ? ' pending' : ''));
            li.dataset.name = a.name;
            li.dataset.state = a.state || 'firing';
            var head = el('div', 'head');
            head.appendChild(el('span', 'name', a.name));
            head.appendChild(el('span', 'sev', a.severity || ''));
            if (pending(a)) head.appendChild(el('span', 'sev state', 'pending'));
            if (a.since_ms != null) {
                var since = el('span', 'since',
                               (pending(a) ? 'pending since ' : 'since ') +
                               fmtClock(a.since_ms) + ' (' +
                               fmtDuration((nowMs - a.since_ms) / 1000) + ')');
                since.title = new Date(a.since_ms).toISOString();
                head.appendChild(since);
            }
            li.appendChild(head);
            if (a.summary) li.appendChild(el('div', 'summary', a.summary));
            var labels = a.labels || {};
            var keys = Object.keys(labels);
            if (keys.length) {
                li.appendChild(el('div', 'labels', keys.map(function (k) {
                    return k + '=' + labels[k];
                }).join('  ')));
            }
            ul.appendChild(li);
        });
    }

    /* ---- connection state ---- */

    function setOnline(d) {
        state.online = true;
        state.lastOkMs = Date.now();
        document.body.classList.remove('offline');
        $('banner').hidden = true;
        $('status').className = 'status status-live';
        setText('status-text', 'live · server time ' + fmtClock(d.now_ms));
    }

    function setOffline(why) {
        state.online = false;
        document.body.classList.add('offline');
        var banner = $('banner');
        banner.textContent = '';
        banner.appendChild(el('strong', null, 'payd is not answering'));
        banner.appendChild(document.createTextNode(
            ' (' + why + '). ' +
            (state.lastOkMs ? 'Showing the data from ' + fmtClock(state.lastOkMs) + '. '
                            : '') +
            'Retrying every second…'));
        banner.hidden = false;
        $('status').className = 'status status-down';
        setText('status-text', 'offline');
    }

    /* ---- the loop ---- */

    function fetchData(sinceMs) {
        var url = '/dashboard/data' + (sinceMs != null ? '?since_ms=' + sinceMs : '');
        var ctl = window.AbortController ? new AbortController() : null;
        var timer = setTimeout(function () { if (ctl) ctl.abort(); }, FETCH_TIMEOUT_MS);
        return fetch(url, {cache: 'no-store', signal: ctl && ctl.signal})
            .then(function (r) {
                if (!r.ok) throw new Error('HTTP ' + r.status);
                return r.json();
            })
            .catch(function (e) {
                if (e && e.name === 'AbortError')
                    throw new Error('no answer in ' + FETCH_TIMEOUT_MS / 1000 + ' s');
                throw e;
            })
            .finally(function () { clearTimeout(timer); });
    }

    function render(d) {
        if (appendSeries(d.series, d.interval_ms || REFRESH_MS)) redrawCharts();
        renderTiles(d);
        renderBreakers(d.breakers);
        renderLimiters(d.limiters);
        renderAlerts(d.alerts, d.now_ms);
    }

    function tick() {
        var started = Date.now();
        var n = cols.t_ms.length;
        var since = n ? cols.t_ms[n - 1] : null;
        fetchData(since).then(function (d) {
            state.last = d;
            setOnline(d);
            render(d);
        }, function (e) {
            setOffline(e && e.message ? e.message : String(e));
        }).catch(function (e) {
            // A bug in this page, not payd being down: say so and keep going.
            console.error('dashboard: cannot show the data:', e);
        }).then(function () {
            setTimeout(tick, Math.max(0, REFRESH_MS - (Date.now() - started)));
        });
    }

    function start() {
        if (typeof uPlot === 'undefined') {
            setOffline('uPlot did not load from /dashboard/uPlot.iife.min.js');
            return;
        }
        CHARTS.forEach(makeChart);
        tick();
    }

    if (document.readyState === 'loading')
        document.addEventListener('DOMContentLoaded', start);
    else
        start();
})();
