// Transpiles src/*.ts one module per file into build/esm/ so the tests can reach the
// internals (records, streams, handshake) that the bundle does not export.
import { build } from "esbuild";
import { readdirSync } from "node:fs";
const here = new URL("..", import.meta.url).pathname;
await build({
  entryPoints: readdirSync(here + "src").filter((f) => f.endsWith(".ts")).map((f) => here + "src/" + f),
  outdir: here + "build/esm",
  format: "esm",
  target: "es2022",
  bundle: false,
  logLevel: "warning",
});
