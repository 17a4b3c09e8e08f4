// Browser end-to-end test: two headless Chromium pages (separate profiles) sign in as different
// users through two different conn nodes and exchange messages; one reloads and must show its
// history plus what arrived while it was away; a large-group message reaches the other member; a
// bad send must show the server's gim code.
//
//   GIM_DEMO_URL=http://127.0.0.1:8000 node test/browser.mjs     (the demo server of run-local.sh)
import { chromium } from 'playwright-core';

const BASE = process.env.GIM_DEMO_URL || 'http://127.0.0.1:8000';
const TIMEOUT = 30000;
const run = Date.now().toString(36);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});

async function open(ctx, user, node) {
  const page = await ctx.newPage();
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (e) => console.error(`[user ${user}] page error: ${e.message}`));
  await page.goto(`${BASE}/?user=${user}&node=${node}`);
  await page.getByTestId('status').filter({ hasText: `signed in as user ${user}` }).waitFor();
  return page;
}

async function openChat(page, peer) {
  await page.getByTestId('peer').fill(String(peer));
  await page.getByTestId('open-chat').click();
}

async function send(page, text) {
  await page.getByTestId('text').fill(text);
  await page.getByTestId('send').click();
}

async function sees(page, text) {
  await page.locator('#messages li .text', { hasText: text }).first().waitFor();
}

let failed = false;
try {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  // Two users on two different conn nodes (endpoint 0 and 1 of the demo config).
  const a = await open(ctxA, 1, 0);
  let b = await open(ctxB, 2, 1);
  const na = await a.getByTestId('status').textContent();
  const nb = await b.getByTestId('status').textContent();
  if (na.split(' on ')[1] === nb.split(' on ')[1]) throw new Error(`both pages on one node: ${na} / ${nb}`);

  const hello = `hello from 1 (${run})`;
  await openChat(a, 2);
  await send(a, hello);
  await sees(a, hello); // the sender's own copy, synced
  await b.locator('#convs li[data-conv="u:1"]').click();
  await sees(b, hello);
  console.log('ok: 1 -> 2 across nodes');

  const reply = `reply from 2 (${run})`;
  await send(b, reply);
  await sees(a, reply);
  console.log('ok: 2 -> 1 across nodes');

  // B goes away; A keeps talking; B comes back (reload) and resyncs.
  await b.close();
  const away = `while you were away (${run})`;
  await send(a, away);
  b = await open(ctxB, 2, 1);
  await b.locator('#convs li[data-conv="u:1"]').click();
  await sees(b, hello);
  await sees(b, reply);
  await sees(b, away);
  const count = await b.locator('#messages li .text', { hasText: away }).count();
  if (count !== 1) throw new Error(`"${away}" shown ${count} times after reload`);
  console.log('ok: reload shows history and resyncs what was missed, once');

  // The demo's large group: read from the group's own list (the SDK tracks it), seen by both.
  const lobby = `to the lobby (${run})`;
  await a.locator('#groups li', { hasText: 'large' }).click();
  await send(a, lobby);
  await b.locator('#groups li', { hasText: 'large' }).click();
  await sees(b, lobby);
  await sees(a, lobby);
  console.log('ok: large group message reaches the other member');

  // A server error shows its gim code.
  await openChat(b, 999999);
  await send(b, 'to nobody');
  await b.getByTestId('error').filter({ hasText: 'gim code 1010' }).waitFor();
  console.log('ok: server errors show the gim code');
} catch (e) {
  failed = true;
  console.error(`browser test failed: ${e.stack || e}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
