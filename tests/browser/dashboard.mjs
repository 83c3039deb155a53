// Drives midge's web dashboard in headless Chromium for tests/interop/test_dashboard.py. It
// opens the page with the admin credentials (DASH_USER, DASH_PASSWORD: HTTP Basic, as a browser
// asks for them), then runs one command per line of its standard input and answers on standard
// output; the Python side publishes with paho-mqtt in between. Console errors and page errors are
// printed as they come ("console-error ..."), so the test sees every one.
//
//   open URL          -> "open STATUS" once the page has had two live updates
//   chart             -> "chart MAX": the largest messages-in/s the overview's chart holds
//   chart-wait        -> the same, once that is above 0 (the chart moved)
//   topic T           -> clicks down the topic tree to T: "tree VALUE" (the tree's column),
//                        "json TEXT" (the viewer's JSON view, as one JSON string), "hex LINE",
//                        "history N" (rows of the history table)
//   publish T PAYLOAD -> fills and submits the explorer's publish form: "published RESULT"
//   kick CLIENT       -> searches the clients table and clicks Disconnect: "kicked CLIENT"
//   clear TOPIC       -> clicks Clear on that retained message: "cleared TOPIC COUNT-TEXT"
//   page NAME         -> shows that page: "page NAME"
//   shot NAME         -> a screenshot to $SCREENSHOTS/dashboard-NAME.png (only when set)
//   quit
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const WAIT = 20000;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // As root (containers, CI) Chromium's sandbox cannot start.
  args: process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [],
});
const say = (line) => process.stdout.write(`${line}\n`);

try {
  const context = await browser.newContext({
    httpCredentials: { username: process.env.DASH_USER, password: process.env.DASH_PASSWORD },
    viewport: { width: 1280, height: 800 },
  });
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error") say(`console-error ${message.text()}`);
  });
  page.on("pageerror", (error) => say(`console-error ${error.message}`));
  page.on("dialog", (dialog) => dialog.accept());

  const show = async (name) => {
    await page.click(`nav a[data-page="${name}"]`);
    await page.waitForSelector(`#page-${name}:not([hidden])`);
  };
  const chartMax = () =>
    page.evaluate(() => Math.max(0, ...window.midgeDashboard.charts.messages.data[1]));

  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const [command, ...args] = line.split(" ");
    if (command === "quit") break;
    if (command === "open") {
      const response = await page.goto(args[0]);
      await page.waitForFunction(() => window.midgeDashboard.events >= 2, null, { timeout: WAIT });
      say(`open ${response.status()}`);
    } else if (command === "chart") {
      say(`chart ${await chartMax()}`);
    } else if (command === "chart-wait") {
      await page.waitForFunction(
        () => Math.max(0, ...window.midgeDashboard.charts.messages.data[1]) > 0,
        null,
        { timeout: WAIT },
      );
      say(`chart ${await chartMax()}`);
    } else if (command === "topic") {
      const topic = args[0];
      await show("topics");
      const levels = topic.split("/");
      for (let i = 1; i <= levels.length; i++) {
        const path = levels.slice(0, i).join("/");
        const node = page.locator(`.node[data-path="${path}"]`);
        await node.waitFor({ timeout: WAIT });
        const last = i === levels.length;
        const closed = (await node.locator(".toggle").textContent()) === "▸";
        const selected = await node.evaluate((n) => n.classList.contains("selected"));
        if (last ? !selected : closed) await node.click();
      }
      await page.waitForFunction(
        (t) => document.querySelector("#detail-topic")?.textContent === t,
        topic,
        { timeout: WAIT },
      );
      await page.waitForSelector("#history-table tbody tr", { timeout: WAIT });
      const value = await page.locator(`.node[data-path="${topic}"] .value`).textContent();
      say(`tree ${value}`);
      await page.click('.tabs button[data-view="json"]');
      say(`json ${JSON.stringify(await page.locator("#detail-value").textContent())}`);
      await page.click('.tabs button[data-view="hex"]');
      const hex = await page.locator("#detail-value").textContent();
      say(`hex ${hex.split("\n")[0]}`);
      await page.click('.tabs button[data-view="json"]');
      say(`history ${await page.locator("#history-table tbody tr").count()}`);
    } else if (command === "publish") {
      const [topic, ...payload] = args;
      await show("topics");
      await page.fill('#publish-form input[name="topic"]', topic);
      await page.fill('#publish-form textarea[name="payload"]', payload.join(" "));
      await page.evaluate(() => {
        document.querySelector("#publish-result").textContent = "";
      });
      await page.click('#publish-form button[type="submit"]');
      await page.waitForFunction(() => document.querySelector("#publish-result").textContent !== "");
      say(`published ${await page.locator("#publish-result").textContent()}`);
    } else if (command === "kick") {
      const client = args[0];
      await show("clients");
      await page.fill("#client-search", client);
      const row = page.locator(`#clients-table tr[data-client="${client}"]`);
      await row.locator("button.danger").waitFor({ timeout: WAIT });
      await row.locator("button.danger").click();
      await page.waitForFunction(
        (c) => {
          const tr = document.querySelector(`#clients-table tr[data-client="${c}"]`);
          return tr === null || tr.querySelector(".pill:not(.on)") !== null;
        },
        client,
        { timeout: WAIT },
      );
      say(`kicked ${client}`);
    } else if (command === "clear") {
      const topic = args[0];
      await show("retained");
      const button = page.locator(`#retained-table tr[data-topic="${topic}"] button.danger`);
      await button.waitFor({ timeout: WAIT });
      await button.click();
      await page.locator(`#retained-table tr[data-topic="${topic}"]`).waitFor({ state: "detached", timeout: WAIT });
      say(`cleared ${topic} ${await page.locator("#retained-count").textContent()}`);
    } else if (command === "page") {
      await show(args[0]);
      if (args[0] === "listeners") await page.waitForSelector("#config-table tbody tr");
      if (args[0] === "retained") await page.waitForSelector("#retained-table tbody tr");
      if (args[0] === "clients") await page.waitForSelector("#clients-table tbody tr");
      say(`page ${args[0]}`);
    } else if (command === "shot") {
      if (process.env.SCREENSHOTS) {
        await page.screenshot({ path: `${process.env.SCREENSHOTS}/dashboard-${args[0]}.png` });
      }
      say(`shot ${args[0]}`);
    } else {
      say(`unknown ${command}`);
    }
  }
} catch (error) {
  say(`failed ${error.message.split("\n")[0]}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
