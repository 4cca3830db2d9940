// The dashboard in a real browser (issue 4): starts payd on a free loopback
// port with a new data directory, sends it a little load, opens /dashboard in
// Debian's headless chromium (driven by playwright-core) and checks that the
// charts get data and the breaker table and the alert list show the sandbox
// channel closed, then open (red, with PaydBreakerOpen firing) after a burst
// of `error` payments. Fails on any console error or uncaught exception in the
// page, any failed request, and any request to a host that is not loopback.
//
// Screenshots: build/artifacts/dashboard.png and dashboard-breaker-open.png.
// Run by scripts/test_browser.sh (make test-browser). Environment:
//   PAYD_BIN       the binary (default: <repo>/build/payd)
//   CHROMIUM_BIN   the browser (default: /usr/bin/chromium)
//   PAYD_KEEP_TMP  1: keep the temporary directories
// As in tests/integration, no PAYD_* variable of the test run reaches payd;
// the test passes what it means to.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const PAYD_BIN = path.resolve(process.env.PAYD_BIN || path.join(REPO, 'build/payd'));
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO, 'build/artifacts');
const KEEP_TMP = process.env.PAYD_KEEP_TMP === '1';

const TEST_DEADLINE_MS = 180_000;  // the whole test, whatever happens
const READY_MS = 30_000;           // payd answering /readyz
const PAGE_WAIT_MS = 30_000;       // the page showing what is expected
const STOP_MS = 10_000;            // SIGTERM to SIGKILL
const LOAD_MAX_REQUESTS = 2_000;   // the background load's bound
const ERROR_MAX_PAYMENTS = 400;    // the breaker burst's bound

// payd's configuration for this test: a breaker that opens after a few
// failed calls and stays open while the test looks, and `error` payments
// that fail on their first attempt.
const PAYD_ENV = {
    PAYD_BREAKER_MIN_CALLS: '5',
    PAYD_BREAKER_OPEN_S: '120',
    PAYD_WORKER_MAX_ATTEMPTS: '1',
    PAYD_LOG_LEVEL: 'warn',
};

const isLoopback = (url) => {
    const u = new URL(url);
    if (u.protocol === 'data:' || u.protocol === 'about:' || u.protocol === 'blob:') return true;
    return ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let passed = 0;
let failed = 0;
function ok(what) {
    passed++;
    console.log(`ok ${passed} - ${what}`);
}

// ---- payd ----

function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

class Payd {
    async start() {
        this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'payd-browser-'));
        this.port = await freePort();
        this.url = `http://127.0.0.1:${this.port}`;
        this.logPath = path.join(this.dataDir, 'payd.log');
        const log = fs.openSync(this.logPath, 'a');
        const env = Object.fromEntries(Object.entries(process.env)
                                       .filter(([k]) => !k.startsWith('PAYD_')));
        this.proc = spawn(PAYD_BIN, ['serve', '--listen', `127.0.0.1:${this.port}`,
                                     '--data-dir', this.dataDir],
                          { env: { ...env, ...PAYD_ENV }, stdio: ['ignore', log, log] });
        fs.closeSync(log);
        this.exited = new Promise((resolve) => this.proc.on('exit', (code, sig) => resolve(code ?? sig)));
        this.exitCode = undefined;
        this.exited.then((c) => { this.exitCode = c; });

        const deadline = Date.now() + READY_MS;
        for (;;) {
            if (this.exitCode !== undefined)
                throw new Error(`payd exited (${this.exitCode}) before it was ready`);
            try {
                const r = await fetch(`${this.url}/readyz`);
                if (r.status === 200) break;
            } catch { /* not listening yet */ }
            if (Date.now() > deadline) throw new Error(`payd not ready in ${READY_MS} ms`);
            await sleep(100);
        }
        this.key = fs.readFileSync(path.join(this.dataDir, 'demo.key'), 'utf8').trim();
    }

    async stop() {
        if (!this.proc || this.exitCode !== undefined) return this.exitCode;
        this.proc.kill('SIGTERM');
        const timer = setTimeout(() => {
            console.error(`payd did not stop in ${STOP_MS} ms after SIGTERM: SIGKILL`);
            this.proc.kill('SIGKILL');
        }, STOP_MS);
        const code = await this.exited;
        clearTimeout(timer);
        return code;
    }

    logTail(lines = 30) {
        try {
            return fs.readFileSync(this.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
        } catch {
            return '(no log)';
        }
    }

    async api(method, p, body, headers = {}) {
        const r = await fetch(`${this.url}${p}`, {
            method,
            headers: { Authorization: `Bearer ${this.key}`, 'Content-Type': 'application/json',
                       ...headers },
            body: body && JSON.stringify(body),
        });
        return { status: r.status, body: await r.json().catch(() => null) };
    }
}

// ---- load ----

let orderSeq = 0;

// One new order and one payment for it; the payment's answer.
async function pay(payd, method) {
    const no = `browser-${process.pid}-${++orderSeq}`;
    const o = await payd.api('POST', '/v1/orders',
                             { merchant_order_no: no, amount: 1999, currency: 'CNY' });
    if (o.status !== 201) throw new Error(`POST /v1/orders: ${o.status} ${JSON.stringify(o.body)}`);
    return payd.api('POST', '/v1/payments',
                    { order_id: o.body.id, channel: 'sandbox', method },
                    { 'Idempotency-Key': `pay-${no}` });
}

// A trickle of `ok` payments (and a read now and then) until stopped, bounded
// in count; the first unexpected answer is kept and fails the test.
function backgroundLoad(payd) {
    const load = { running: true, requests: 0, error: null };
    load.done = (async () => {
        while (load.running && load.requests < LOAD_MAX_REQUESTS) {
            try {
                const p = await pay(payd, 'ok');
                load.requests += 2;
                if (p.status !== 202) throw new Error(`POST /v1/payments: ${p.status}`);
                if (orderSeq % 5 === 0) {
                    await payd.api('GET', `/v1/payments/${p.body.id}`);
                    load.requests++;
                }
            } catch (e) {
                load.error = load.error || e;
                return;
            }
            await sleep(100);
        }
    })();
    load.stop = async () => {
        load.running = false;
        await load.done;
        if (load.error) throw load.error;
    };
    return load;
}

// `error` payments until POST /v1/payments answers 503 channel_unavailable:
// the sandbox breaker is open. Returns how many were accepted before.
async function openBreaker(payd) {
    for (let i = 0; i < ERROR_MAX_PAYMENTS; i++) {
        const p = await pay(payd, 'error');
        if (p.status === 503 && p.body?.error?.code === 'channel_unavailable') return i;
        if (p.status !== 202) throw new Error(`POST /v1/payments (error): ${p.status}`);
        await sleep(20);
    }
    throw new Error(`the sandbox breaker did not open after ${ERROR_MAX_PAYMENTS} error payments`);
}

// ---- the browser ----

// Debian's chromium; playwright-core gives it a new, empty profile
// (--user-data-dir in a temporary directory it removes on close).
function launch() {
    return chromium.launch({
        executablePath: CHROMIUM_BIN,
        headless: true,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
}

// Problems the page shows whatever the step: console errors, uncaught
// exceptions, failed or non-loopback requests.
function watch(context, page) {
    const problems = [];
    context.route((url) => !isLoopback(url.href), (route) => {
        problems.push(`request to a non-loopback host: ${route.request().url()}`);
        return route.abort();
    });
    page.on('console', (msg) => {
        if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`uncaught in the page: ${e.message}`));
    page.on('requestfailed', (r) => {
        if (isLoopback(r.url())) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
    });
    page.on('response', (r) => {
        if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
    });
    return problems;
}

function checkProblems(problems, when) {
    if (problems.length)
        throw new Error(`${when}:\n  ${problems.join('\n  ')}`);
}

async function waitFor(page, what, fn, arg) {
    try {
        await page.waitForFunction(fn, arg, { timeout: PAGE_WAIT_MS, polling: 200 });
    } catch (e) {
        const state = await page.evaluate(() => ({
            banner: document.getElementById('banner')?.hidden ? null
                : document.getElementById('banner')?.textContent,
            breakers: document.getElementById('breakers')?.innerText,
            alerts: document.getElementById('alerts')?.innerText,
            last: window.payd?.last && { breakers: window.payd.last.breakers,
                                         alerts: window.payd.last.alerts },
        })).catch(() => null);
        throw new Error(`the page did not show ${what} in ${PAGE_WAIT_MS} ms ` +
                        `(${e.message.split('\n')[0]}); the page: ${JSON.stringify(state)}`);
    }
}

// ---- the test ----

const payd = new Payd();

async function main() {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    let browser = null;
    let load = null;
    try {
        await payd.start();
        ok(`payd serves on ${payd.url}`);
        load = backgroundLoad(payd);

        browser = await launch();
        const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
        const page = await context.newPage();
        const problems = watch(context, page);

        const r = await page.goto(`${payd.url}/dashboard`, { waitUntil: 'load' });
        if (r.status() !== 200) throw new Error(`GET /dashboard: ${r.status()}`);
        const ct = r.headers()['content-type'] || '';
        if (!ct.startsWith('text/html')) throw new Error(`GET /dashboard: Content-Type ${ct}`);

        await waitFor(page, 'charts with requests in them', () => {
            const c = window.payd && window.payd.charts && window.payd.charts.qps;
            return c && c.data[0].length > 0 && c.data[1].some((v) => v > 0);
        });
        const charts = await page.evaluate(() => Object.fromEntries(
            Object.entries(window.payd.charts).map(([k, c]) => [k, c.data[0].length])));
        for (const name of ['qps', 'latency', 'error_ratio', 'payments', 'queue_depth', 'rejected'])
            if (!(charts[name] > 0)) throw new Error(`chart ${name} has no points: ${JSON.stringify(charts)}`);
        ok(`the charts have data (${JSON.stringify(charts)})`);

        await waitFor(page, 'sandbox closed in the breaker table', () => {
            const tr = document.querySelector('#breakers tr[data-channel="sandbox"]');
            return tr && tr.classList.contains('breaker-closed') && /closed/.test(tr.textContent);
        });
        await waitFor(page, 'the payments chart with succeeded payments', () =>
            window.payd.charts.payments.data[1].some((v) => v > 0));
        // (a pending alert, such as latency while the first requests warm up, may show)
        await waitFor(page, 'no firing alert', () =>
            window.payd.last && !document.querySelector('#alerts li.alert[data-state="firing"]'));
        await waitFor(page, 'five seconds of points (for the picture)', () =>
            window.payd.charts.qps.data[0].length >= 5);
        await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png') });
        checkProblems(problems, 'while the dashboard loaded');
        ok('sandbox breaker closed, no alert firing; build/artifacts/dashboard.png');

        await load.stop();
        const accepted = await openBreaker(payd);
        ok(`the sandbox breaker opened after ${accepted} error payments`);

        await waitFor(page, 'the sandbox breaker open', () => {
            const tr = document.querySelector('#breakers tr[data-channel="sandbox"]');
            const pill = tr && tr.querySelector('.pill');
            return tr && tr.classList.contains('breaker-open') && /open/.test(pill.textContent) &&
                getComputedStyle(pill).backgroundColor === 'rgb(207, 34, 46)';
        });
        await waitFor(page, 'the PaydBreakerOpen alert', () =>
            [...document.querySelectorAll('#alerts li.alert')].some((li) =>
                li.dataset.name === 'PaydBreakerOpen' && li.dataset.state === 'firing' &&
                /sandbox/.test(li.textContent)));
        await waitFor(page, 'failed payments in the payments chart', () =>
            window.payd.charts.payments.data[2].some((v) => v > 0));
        await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-breaker-open.png') });
        checkProblems(problems, 'while the breaker opened');
        ok('sandbox breaker open (red) and PaydBreakerOpen listed; ' +
           'build/artifacts/dashboard-breaker-open.png');

        // Close the page before payd stops: its next fetch would fail.
        await browser.close();
        browser = null;
        const code = await payd.stop();
        if (code !== 0) throw new Error(`payd exited with ${code} after SIGTERM`);
        ok('payd stopped cleanly on SIGTERM');
    } catch (e) {
        failed++;
        console.log(`not ok ${passed + 1} - ${e.stack || e}`);
        console.log(`payd's log (last lines, ${payd.logPath}):\n${payd.logTail()}`);
    } finally {
        if (load) {
            load.running = false;
            await load.done.catch(() => {});
        }
        if (browser) await browser.close().catch(() => {});
        await payd.stop();
        if (payd.dataDir && !KEEP_TMP && !failed)
            fs.rmSync(payd.dataDir, { recursive: true, force: true });
        else if (payd.dataDir)
            console.log(`kept payd's data directory ${payd.dataDir}`);
    }
}

const deadline = setTimeout(() => {
    console.log(`not ok - the test did not finish in ${TEST_DEADLINE_MS} ms`);
    if (payd.proc && payd.exitCode === undefined) payd.proc.kill('SIGKILL');
    console.log(`dashboard: ${passed} passed, 1 failed`);
    process.exit(1);
}, TEST_DEADLINE_MS);
await main();
clearTimeout(deadline);
console.log(`dashboard: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
