// Drives headless Chromium for tests/interop/test_browser.py: opens PAGE (served by midge's
// http_dir), then for each URL,VERSION argument calls the page's start() (MQTT.js connects over
// ws:// or wss:// and subscribes), prints "ready URL VERSION", and waits for the page to echo one
// message back ("done URL VERSION TOPIC"). The Python side publishes in between, over TCP.
// The wss listener's certificate is from the test CA, which Chromium does not know: the browser
// trusts that certificate's key alone (TRUST_SPKI: the base64 SHA-256 of its SubjectPublicKeyInfo,
// Chromium's --ignore-certificate-errors-spki-list), and any other certificate error still fails.
import { chromium } from "playwright-core";

const [page_url, ...targets] = process.argv.slice(2);
const args = process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []; // root: no sandbox
if (process.env.TRUST_SPKI) args.push(`--ignore-certificate-errors-spki-list=${process.env.TRUST_SPKI}`);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args,
});
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on("console", (message) => console.log(`console ${message.text()}`));
  page.on("pageerror", (error) => console.log(`pageerror ${error.message}`));
  const response = await page.goto(page_url);
  console.log(`page ${response.status()}`);
  for (const target of targets) {
    const [url, version] = target.split(",");
    const granted = await page.evaluate(([u, v]) => window.start(u, Number(v)), [url, version]);
    console.log(`ready ${url} ${version} ${JSON.stringify(granted)}`);
    const topic = await page.evaluate(() => window.echoed);
    console.log(`done ${url} ${version} ${topic}`);
  }
} finally {
  await browser.close();
}
