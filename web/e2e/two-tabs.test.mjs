// End-to-end test of the web app against a running Herald gateway, in a real
// browser (Debian's Chromium driven by playwright-core).
//
//   HERALD_URL=http://127.0.0.1:8080 npm run test:e2e
//
// Needs the built app served by the gateway at HERALD_URL (with `news:*` and
// `events` public and `news:*` keeping history, as `herald demo` configures).
// Never downloads a browser: set CHROMIUM_PATH if Chromium is not at
// /usr/bin/chromium.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const ARTIFACTS = path.resolve(WEB_DIR, '../test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
// Generous: CI machines are small and the backend goes through Redis.
const TIMEOUT = Number(process.env.HERALD_E2E_TIMEOUT_MS || 20_000);
// How long the page holds an `events` text back, waiting for its `news:content`
// twin (EVENTS_GRACE_MS in src/feed.ts), plus a margin: after that, a
// duplicate would have shown.
const DUPLICATE_WINDOW_MS = 1500 + 1000;

const BASE = (process.env.HERALD_URL || '').replace(/\/+$/, '');

/** @type {import('playwright-core').Browser} */
let browser;
/** Uncaught page errors, reported by the test that caused them. */
const pageErrors = [];

async function checkBackend() {
  if (!BASE) {
    throw new Error('HERALD_URL is not set. Start the backend (e.g. `herald demo`) and run: HERALD_URL=http://127.0.0.1:8080 npm run test:e2e');
  }
  let res;
  try {
    res = await fetch(`${BASE}/healthz`, { signal: AbortSignal.timeout(5000) });
  } catch (e) {
    throw new Error(`HERALD_URL=${BASE} is unreachable: GET /healthz failed (${e?.cause?.code || e?.cause?.errors?.[0]?.code || e?.cause?.message || e?.message || e}). Is the gateway running?`);
  }
  if (res.status !== 200) throw new Error(`GET ${BASE}/healthz returned ${res.status}, expected 200`);
  const body = await res.json().catch(() => null);
  if (!body || typeof body.instance_id !== 'string') {
    throw new Error(`GET ${BASE}/healthz did not return {"status":"ok","instance_id":...}: ${JSON.stringify(body)}`);
  }
  const page = await fetch(`${BASE}/`, { signal: AbortSignal.timeout(5000) });
  const html = await page.text();
  if (!html.includes('id="root"')) {
    throw new Error(`GET ${BASE}/ does not serve the web app (no #root element). Was web/dist built and is the gateway serving it?`);
  }
}

/** Opens the app in a new tab and waits until its WebSocket is connected. */
async function openApp(context, name) {
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`[${name}] ${err.message}`));
  page.on('console', (msg) => {
    // The 422 of the validation test is expected; anything else is worth seeing.
    if (msg.type() === 'error' && !msg.text().includes('status of 422')) process.stderr.write(`[${name} console.error] ${msg.text()}\n`);
  });
  await page.goto(`${BASE}/`, { waitUntil: 'domcontentloaded', timeout: TIMEOUT });
  await waitForConnected(page, name);
  return page;
}

async function waitForConnected(page, name) {
  await waitForBadge(page, name, '^connected$');
}

/** Waits until the connection badge's text matches `pattern` (a RegExp source). */
async function waitForBadge(page, name, pattern) {
  const badge = page.getByTestId('connection-badge');
  try {
    await page.waitForFunction(
      (source) => new RegExp(source).test(document.querySelector('[data-testid="connection-badge"]')?.textContent?.trim() ?? ''),
      pattern,
      { timeout: TIMEOUT },
    );
  } catch {
    const text = await badge.textContent().catch(() => '<no badge>');
    throw new Error(`tab ${name}: connection badge never matched /${pattern}/ within ${TIMEOUT} ms (last: "${text}")`);
  }
}

function uniqueTitle(prefix) {
  return `${prefix} ${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

async function createContent(page, title, body) {
  await page.getByTestId('title-input').fill(title);
  await page.getByTestId('body-input').fill(body);
  await page.getByTestId('submit-button').click();
}

/** How many feed items of `page` contain `text`. */
function feedCount(page, text) {
  return page.getByTestId('feed-item').filter({ hasText: text }).count();
}

async function waitForFeedText(page, name, expected) {
  const item = page.getByTestId('feed-item').filter({ hasText: expected });
  try {
    await item.first().waitFor({ state: 'visible', timeout: TIMEOUT });
  } catch {
    const seen = await page.getByTestId('feed-item').allTextContents().catch(() => []);
    throw new Error(`tab ${name}: feed never showed "${expected}" within ${TIMEOUT} ms; feed had: ${JSON.stringify(seen)}`);
  }
}

async function saveScreenshot(page, file) {
  await mkdir(ARTIFACTS, { recursive: true });
  const target = path.join(ARTIFACTS, file);
  await page.screenshot({ path: target, fullPage: true });
  return target;
}

describe('Herald web app', () => {
  before(async () => {
    await checkBackend();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    });
  });

  after(async () => {
    await browser?.close();
  });

  test('content created in tab A appears live in tabs A and B', async () => {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    try {
      const a = await openApp(context, 'A');
      const b = await openApp(context, 'B');

      const title = uniqueTitle('e2e');
      const expected = `Content published: ${title}`;

      await createContent(a, title, 'Created by web/e2e/two-tabs.test.mjs');

      try {
        await waitForFeedText(b, 'B', expected);
        await waitForFeedText(a, 'A', expected);
      } catch (e) {
        await saveScreenshot(b, 'web-two-tabs-failure-B.png').catch(() => {});
        await saveScreenshot(a, 'web-two-tabs-failure-A.png').catch(() => {});
        throw e;
      }

      // Tab A's form reported the created item and cleared itself.
      await a.getByTestId('form-success').waitFor({ state: 'visible', timeout: TIMEOUT });
      assert.equal(await a.getByTestId('title-input').inputValue(), '');

      // Both tabs know which gateway instance they talk to.
      for (const [name, page] of [['A', a], ['B', b]]) {
        await page.waitForFunction(
          () => {
            const t = document.querySelector('[data-testid="instance-label"]')?.textContent?.trim() ?? '';
            return t !== '' && t !== '…';
          },
          null,
          { timeout: TIMEOUT },
        );
        const label = (await page.getByTestId('instance-label').textContent())?.trim() ?? '';
        assert.ok(label.length > 0 && label !== 'unavailable', `tab ${name}: instance label is "${label}"`);
      }

      // Tab B's "recent content" list picks up the new item too (refreshed on notification).
      await b.getByTestId('content-item').filter({ hasText: title }).first().waitFor({ state: 'visible', timeout: TIMEOUT });

      // Both still connected: creating content must not disturb the sockets.
      assert.equal((await b.getByTestId('connection-badge').textContent())?.trim(), 'connected');

      // The creation reaches each tab twice (`news:content` and the tutorial's `events`)
      // but shows once.
      await b.waitForTimeout(DUPLICATE_WINDOW_MS);
      assert.equal(await feedCount(a, expected), 1, 'tab A shows the creation exactly once');
      assert.equal(await feedCount(b, expected), 1, 'tab B shows the creation exactly once');

      const shot = await saveScreenshot(b, 'web-two-tabs.png');
      console.log(`screenshot: ${shot}`);
      assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    } finally {
      await context.close();
    }
  });

  test('an empty title shows the server validation error next to the field', async () => {
    // What the server says about an empty title, to compare with what the page shows.
    const res = await fetch(`${BASE}/api/content`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: '', body: 'x' }),
    });
    assert.equal(res.status, 422, 'POST /api/content with an empty title must return 422');
    const err = await res.json();
    assert.equal(err.error, 'validation_failed');
    assert.equal(err.field, 'title');

    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    try {
      const page = await openApp(context, 'V');
      await page.getByTestId('title-input').fill('');
      await page.getByTestId('body-input').fill('no title');
      await page.getByTestId('submit-button').click();

      const fieldError = page.getByTestId('title-error');
      await fieldError.waitFor({ state: 'visible', timeout: TIMEOUT });
      assert.equal((await fieldError.textContent())?.trim(), err.message);
      assert.equal(await page.getByTestId('title-input').getAttribute('aria-invalid'), 'true');
      // Nothing was published, and the body is kept for the user to fix the title.
      assert.equal(await page.getByTestId('form-success').count(), 0);
      assert.equal(await page.getByTestId('body-input').inputValue(), 'no title');

      await saveScreenshot(page, 'web-validation-error.png');
      assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    } finally {
      await context.close();
    }
  });
  test('a tab that was offline recovers what it missed when it reconnects', async () => {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
    try {
      const a = await openApp(context, 'A');
      const b = await openApp(context, 'B');
      const instance = (await b.getByTestId('instance-label').textContent())?.trim();

      // Tab B loses its network (the page's debug hook, src/useLiveFeed.ts): its socket
      // drops with 1006 and its reconnect attempts fail until it comes back.
      await b.waitForFunction(() => typeof window.__herald?.goOffline === 'function', null, { timeout: TIMEOUT });
      await b.evaluate(() => window.__herald.goOffline());
      await waitForBadge(b, 'B', '^reconnecting \\(attempt [0-9]+\\)$');
      assert.equal(await b.getByTestId('connection-badge').getAttribute('data-state'), 'reconnecting');

      // Meanwhile tab A creates content; A sees it live, B cannot.
      const title = uniqueTitle('missed');
      const expected = `Content published: ${title}`;
      await createContent(a, title, 'Created while tab B was offline');
      await waitForFeedText(a, 'A', expected);
      assert.equal(await feedCount(b, expected), 0, 'tab B, offline, must not have the item yet');
      await saveScreenshot(b, 'web-recovery-offline.png');

      // B comes back: it resubscribes with `since` and the gateway replays the gap.
      await b.evaluate(() => window.__herald.goOnline());
      try {
        await waitForBadge(b, 'B', '^recovered 1 missed$');
        await waitForFeedText(b, 'B', expected);
      } catch (e) {
        await saveScreenshot(b, 'web-recovery-failure-B.png').catch(() => {});
        throw e;
      }
      assert.equal(await b.getByTestId('connection-badge').getAttribute('data-state'), 'recovered');
      const replayed = b.getByTestId('feed-item').filter({ hasText: expected });
      assert.equal(await replayed.count(), 1, 'the missed item shows once');
      assert.equal(await replayed.first().getAttribute('data-missed'), 'true', 'the replayed item is tagged as missed');
      assert.equal((await b.getByTestId('instance-label').textContent())?.trim(), instance);
      await b.getByTestId('content-item').filter({ hasText: title }).first().waitFor({ state: 'visible', timeout: TIMEOUT });

      // Live delivery goes on after the recovery, on the new connection.
      const after = uniqueTitle('after');
      await createContent(a, after, 'Created after tab B reconnected');
      await waitForFeedText(b, 'B', `Content published: ${after}`);
      const live = b.getByTestId('feed-item').filter({ hasText: `Content published: ${after}` });
      assert.equal(await live.first().getAttribute('data-missed'), null, 'a live item is not tagged as missed');
      await b.waitForTimeout(DUPLICATE_WINDOW_MS);
      assert.equal(await feedCount(b, expected), 1, 'no duplicate of the missed item');
      assert.equal(await feedCount(b, `Content published: ${after}`), 1, 'no duplicate of the live item');

      const shot = await saveScreenshot(b, 'web-recovery.png');
      console.log(`screenshot: ${shot}`);
      assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    } finally {
      await context.close();
    }
  });
});
