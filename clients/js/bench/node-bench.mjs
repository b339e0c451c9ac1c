// Speed of the JS client in Node against a live `sessioncert serve`, next to the Rust
// client (`sessioncert bench`) against the same server.
//
//   node bench/node-bench.mjs                       starts its own server (SESSIONCERT_BIN)
//   node bench/node-bench.mjs --url URL --pin PIN   uses a running one
//   options: --duration 5 (seconds per request run) --concurrency 8 --no-rust
//
// handshake: median of 100 sequential connect() calls; each is a GET of the key
// configuration and the handshake POST (the key confirmation rides on the first request,
// so no third round trip). "handshake only" is the time from the configuration's arrival
// to the established session (X25519 key generation, ClientHello, POST, ServerHello, keys).
// requests/s: one session, N concurrent workers POSTing a 1 KiB JSON body to /apiTest.
import { execFileSync } from "node:child_process";
import { connect } from "../dist/sessioncert.js";
import { startServer, BIN } from "../test/server.mjs";

const arg = (name, dflt) => {
  const i = process.argv.indexOf("--" + name);
  return i < 0 ? dflt : process.argv[i + 1];
};
const duration = Number(arg("duration", 5));
const concurrency = Number(arg("concurrency", 8));
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

let srv = null;
let base = arg("url", null);
let pin = arg("pin", null);
if (!base) {
  srv = await startServer();
  base = srv.base;
  pin = srv.pin;
}
const body = JSON.stringify({ data: "x".repeat(1024 - 11) });

try {
  // Warm up (JIT, connections).
  for (let i = 0; i < 10; i++) await (await connect(base, { pin })).close();

  const total = [], hsOnly = [];
  for (let i = 0; i < 100; i++) {
    let tCfg = 0, tEst = 0;
    const t0 = performance.now();
    const s = await connect(base, { pin, onWire: (e) => {
      if (e.kind === "config") tCfg = performance.now();
      if (e.kind === "established") tEst = performance.now();
    } });
    total.push(performance.now() - t0);
    hsOnly.push(tEst - tCfg);
    await s.close();
  }

  async function rate(send) {
    let n = 0, failed = 0;
    const lat = [];
    const end = performance.now() + duration * 1000;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try { await send(); n++; lat.push(performance.now() - t); } catch { failed++; }
      }
    }));
    return { perSec: n / duration, failed, p50: median(lat) };
  }
  const session = await connect(base, { pin });
  const sealed = await rate(async () => {
    const r = await session.fetch("/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body });
    if (r.status !== 200) throw new Error(String(r.status));
    await r.arrayBuffer();
  });
  const plain = await rate(async () => {
    const r = await fetch(base + "/plain/apiTest", { method: "POST", headers: { "content-type": "application/json" }, body });
    if (r.status !== 200) throw new Error(String(r.status));
    await r.arrayBuffer();
  });
  await session.close();

  console.log(`node ${process.version}, ${base}`);
  console.log(`JS connect() (config + handshake), median of 100: ${median(total).toFixed(2)} ms (p90 ${pct(total, 90).toFixed(2)} ms)`);
  console.log(`JS handshake only (config received → established), median of 100: ${median(hsOnly).toFixed(2)} ms`);
  console.log(`JS sealed POST /apiTest 1 KiB, concurrency ${concurrency}, ${duration} s: ${sealed.perSec.toFixed(0)} req/s (p50 ${sealed.p50.toFixed(2)} ms, ${sealed.failed} failed)`);
  console.log(`JS plain fetch POST /plain/apiTest, same: ${plain.perSec.toFixed(0)} req/s (p50 ${plain.p50.toFixed(2)} ms) → sealed/plain ${(sealed.perSec / plain.perSec).toFixed(2)}`);

  if (!process.argv.includes("--no-rust")) {
    const bin = process.env.SESSIONCERT_BIN ?? BIN;
    const run = (args) => JSON.parse(execFileSync(bin, ["bench", ...args, "--json", "--progress", "0s"], { encoding: "utf8" }));
    const hs = run(["handshake", "--url", base, "--pin", pin, "--duration", "3s", "--concurrency", "1"]);
    const rq = run(["request", "--url", base + "/apiTest", "--pin", pin, "--duration", `${duration}s`, "--concurrency", String(concurrency)]);
    const rp = run(["request", "--url", base + "/plain/apiTest", "--plain", "--duration", `${duration}s`, "--concurrency", String(concurrency)]);
    console.log(`Rust client handshake (bench handshake, concurrency 1): ${JSON.stringify(hs)}`);
    console.log(`Rust client sealed requests (bench request, concurrency ${concurrency}): ${JSON.stringify(rq)}`);
    console.log(`Rust client plain requests: ${JSON.stringify(rp)}`);
  }
} finally {
  await srv?.stop();
}
