// The overview page's weight and time to first render, on a cold cache:
// bytes transferred (headers and bodies, from Playwright's request events)
// for the console's own files and for the API calls of the first render,
// and the paint timings (first paint, first contentful paint), plus the
// time until the roles table (the first data) is drawn.
//
// env: MLSERVE_URL, MLSERVE_ADMIN_KEY.

import { BASE, check, launch, WAIT } from './lib.mjs';

const KEY = process.env.MLSERVE_ADMIN_KEY;

const browser = await launch();
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  context.setDefaultTimeout(WAIT);
  // Signed in already (the token in session storage), so the first load is the overview.
  await context.addInitScript(t => sessionStorage.setItem('mlserve.token', t), KEY);
  const page = await context.newPage();
  const requests = [];
  page.on('requestfinished', r => requests.push(r));
  await page.goto(`${BASE}/ui/`);
  await page.locator('#roles-table').waitFor();
  await page.locator('#served-table').waitFor();
  const timing = await page.evaluate(() => {
    const paint = Object.fromEntries(performance.getEntriesByType('paint').map(e => [e.name, e.startTime]));
    const nav = performance.getEntriesByType('navigation')[0];
    const data = performance.getEntriesByName('mlserve:first-data')[0];
    return { ...paint, domContentLoaded: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, data: data && data.startTime };
  });
  let assets = 0, apis = 0, assetCount = 0, apiCount = 0;
  const files = [];
  for (const r of requests) {
    const sizes = await r.sizes();
    const n = sizes.responseBodySize + sizes.responseHeadersSize;
    if (new URL(r.url()).pathname.startsWith('/ui')) {
      assets += n; assetCount++;
      files.push([new URL(r.url()).pathname, sizes.responseBodySize]);
    } else { apis += n; apiCount++; }
  }
  check(assetCount > 0, 'no console file was requested');
  console.log(JSON.stringify({
    ok: true, asset_bytes: assets, asset_requests: assetCount, api_bytes: apis, api_requests: apiCount,
    files, first_paint_ms: timing['first-paint'], first_contentful_paint_ms: timing['first-contentful-paint'],
    dom_content_loaded_ms: timing.domContentLoaded, load_ms: timing.load, first_data_drawn_ms: timing.data,
  }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: e.stack || String(e) }));
  process.exitCode = 1;
} finally {
  await browser.close();
}
