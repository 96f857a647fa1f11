// The MLflow UI in a real browser (Debian's chromium, driven by playwright-core), through nginx.
//   node tests/ui/ui.cjs SPEC_JSON     SPEC: {base, user, password, pages: [{name, path, expect: [text]}], outDir,
//                                             prefix}; prints a JSON list of results (status, texts found,
//                                             screenshot) and then the wrong-password page's.
// PLAYWRIGHT_CORE names the installed playwright-core (tests/harness/node-tools.sh prints it).
const { chromium } = require(process.env.PLAYWRIGHT_CORE || 'playwright-core');

const ARGS = [
  // root in a container: no sandbox; the machine's network is closed: no background connections
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

async function visit(context, base, check, outDir, prefix) {
  // a page of its own: the UI's routes differ in the URL's fragment only, and a second goto in the same page would
  // be a same-document navigation without an HTTP response
  const page = await context.newPage();
  const response = await page.goto(base + check.path, { waitUntil: 'domcontentloaded', timeout: 60000 });
  const found = {};
  for (const text of check.expect) {
    try {
      await page.getByText(text).first().waitFor({ state: 'visible', timeout: 60000 });
      found[text] = true;
    } catch (error) {
      found[text] = false;
    }
  }
  const screenshot = `${outDir}/${prefix}-${check.name}.png`;
  await page.screenshot({ path: screenshot });
  await page.close();
  return { name: check.name, status: response ? response.status() : null, found, screenshot };
}

async function main() {
  const spec = JSON.parse(process.argv[2]);
  // the deployment's own CA is not in the browser's store: the probe checks the certificate; here the pages count
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ARGS });
  const results = [];
  try {
    const context = await browser.newContext({
      httpCredentials: { username: spec.user, password: spec.password },
      ignoreHTTPSErrors: true,
      viewport: { width: 1400, height: 900 },
    });
    for (const check of spec.pages) {
      results.push(await visit(context, spec.base, check, spec.outDir, spec.prefix));
    }
    await context.close();

    const wrong = await browser.newContext({
      httpCredentials: { username: spec.user, password: `not-${spec.password}` },
      ignoreHTTPSErrors: true,
    });
    const wrongPage = await wrong.newPage();
    const response = await wrongPage.goto(`${spec.base}/`, { waitUntil: 'domcontentloaded', timeout: 60000 });
    const screenshot = `${spec.outDir}/${spec.prefix}-wrong-password.png`;
    await wrongPage.screenshot({ path: screenshot });
    results.push({
      name: 'wrong-password',
      status: response ? response.status() : null,
      body: ((await wrongPage.textContent('body')) || '').trim().slice(0, 200),
      screenshot,
    });
    await wrong.close();
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(results));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
