// The same measurements as node-bench.mjs, inside Debian's Chromium (headless), driven by
// playwright-core (a dev tool, not a dependency of the package: `npm install --no-save
// playwright-core`). The page and the bundle are served at the sessioncert server's own
// origin by intercepting exactly two URLs, so the client talks to the server directly.
//
//   node bench/chromium-bench.mjs [--duration 5] [--concurrency 8]
import { readFileSync } from "node:fs";
import { startServer } from "../test/server.mjs";

let chromium;
try {
  ({ chromium } = await import("playwright-core"));
} catch {
  console.error("playwright-core is not installed: npm install --no-save playwright-core");
  process.exit(2);
}
const arg = (name, dflt) => { const i = process.argv.indexOf("--" + name); return i < 0 ? dflt : process.argv[i + 1]; };
const duration = Number(arg("duration", 5));
const concurrency = Number(arg("concurrency", 8));
const bundle = readFileSync(new URL("../dist/sessioncert.js", import.meta.url));

const srv = await startServer();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.route(`${srv.base}/__bench/index.html`, (r) => r.fulfill({ contentType: "text/html", body: "<!doctype html><title>bench</title>" }));
  await page.route(`${srv.base}/__bench/sessioncert.js`, (r) => r.fulfill({ contentType: "text/javascript", body: bundle }));
  await page.goto(`${srv.base}/__bench/index.html`);
  const result = await page.evaluate(async ({ pin, duration, concurrency }) => {
    const { connect } = await import("/__bench/sessioncert.js");
    const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
    for (let i = 0; i < 10; i++) await (await connect(location.origin, { pin })).close();
    const total = [], hsOnly = [];
    for (let i = 0; i < 100; i++) {
      let tCfg = 0, tEst = 0;
      const t0 = performance.now();
      const s = await connect(location.origin, { pin, onWire: (e) => {
        if (e.kind === "config") tCfg = performance.now();
        if (e.kind === "established") tEst = performance.now();
      } });
      total.push(performance.now() - t0);
      hsOnly.push(tEst - tCfg);
      await s.close();
    }
    const body = JSON.stringify({ data: "x".repeat(1024 - 11) });
    async function rate(send) {
      let n = 0;
      const end = performance.now() + duration * 1000;
      await Promise.all(Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) { await send(); n++; }
      }));
      return n / duration;
    }
    const session = await connect(location.origin, { pin });
    const sealed = await rate(async () => {
      const r = await session.fetch("/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body });
      if (r.status !== 200) throw new Error(String(r.status));
      await r.arrayBuffer();
    });
    const plain = await rate(async () => {
      const r = await fetch("/plain/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body });
      await r.arrayBuffer();
    });
    await session.close();
    return { connect: median(total), handshake: median(hsOnly), sealed, plain, ua: navigator.userAgent };
  }, { pin: srv.pin, duration, concurrency });
  console.log(result.ua);
  console.log(`Chromium connect() (config + handshake), median of 100: ${result.connect.toFixed(2)} ms`);
  console.log(`Chromium handshake only (config received → established), median of 100: ${result.handshake.toFixed(2)} ms`);
  console.log(`Chromium sealed POST /apiTest 1 KiB, concurrency ${concurrency}, ${duration} s: ${result.sealed.toFixed(0)} req/s`);
  console.log(`Chromium plain fetch POST /plain/apiTest, same: ${result.plain.toFixed(0)} req/s → sealed/plain ${(result.sealed / result.plain).toFixed(2)}`);
  if (errors.length) console.log("console errors:", errors);
} finally {
  await browser.close();
  await srv.stop();
}
