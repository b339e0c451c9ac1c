// Starts a real `sessioncert serve` on 127.0.0.1 (a free port, a fresh data directory)
// for the live tests and the benchmark; stop() kills exactly that process.
import { spawn, execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

// SESSIONCERT_BIN, else the release binary in CARGO_TARGET_DIR (as cargo puts it), else
// in the repository's target/.
export const BIN = process.env.SESSIONCERT_BIN
  ?? (process.env.CARGO_TARGET_DIR ? process.env.CARGO_TARGET_DIR.replace(/\/$/, "") + "/release/sessioncert" : null)
  ?? new URL("../../../target/release/sessioncert", import.meta.url).pathname;

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const canConnect = (port) =>
  new Promise((resolve) => {
    const c = tcpConnect(port, "127.0.0.1");
    c.once("connect", () => { c.destroy(); resolve(true); });
    c.once("error", () => resolve(false));
  });

export async function startServer(extraArgs = []) {
  if (!existsSync(BIN))
    throw new Error(`no sessioncert binary at ${BIN}: build it (cargo build --release -p sessioncert-cli) or set SESSIONCERT_BIN`);
  const data = mkdtempSync(join(tmpdir(), "sessioncert-js-"));
  const port = await freePort();
  let log = "";
  const child = spawn(BIN, ["serve", "--addr", `127.0.0.1:${port}`, "--data", data, ...extraArgs], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" },
  });
  child.stdout.on("data", (d) => (log += d));
  child.stderr.on("data", (d) => (log += d));
  const deadline = Date.now() + 20_000;
  while (!(await canConnect(port))) {
    if (child.exitCode !== null) throw new Error(`sessioncert serve exited early (${child.exitCode}):\n${log}`);
    if (Date.now() > deadline) { child.kill(); throw new Error(`sessioncert serve did not listen:\n${log}`); }
    await new Promise((r) => setTimeout(r, 50));
  }
  const pin = execFileSync(BIN, ["fingerprint", "--data", data], { encoding: "utf8" }).trim();
  return {
    base: `http://127.0.0.1:${port}`,
    pin,
    data,
    log: () => log,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill("SIGKILL");
      }
      rmSync(data, { recursive: true, force: true });
    },
  };
}
