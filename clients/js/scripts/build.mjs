// Builds dist/sessioncert.js (one minified ES module, es2022, no dependencies) and
// dist/sessioncert.d.ts (declarations bundled into one file), then prints the sizes.
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";

const here = new URL("..", import.meta.url).pathname;
mkdirSync(here + "dist", { recursive: true });
await build({
  entryPoints: [here + "src/index.ts"],
  outfile: here + "dist/sessioncert.js",
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  // Internal member names only (never part of the API or of WireEvent): shorter in the bundle.
  mangleProps: /^(handshaking|closedForGood|highWater|verifiedPin|lastId|contentLeft|lastSealed|keyForSealing|keyForOpening|mixHash|mixKey|encryptAndHash|decryptAndHash|idText|nextSeq|idleTimeout|lastUsed|requestTag|sendUrl|chunksOpened|closeLive|outcomeUnknown|acquire|exchange|handshake|transport|identity|streamSource|clientHello|clientFinished|handshakeHash|confirmation|c2sIv|s2cIv|refusal|store|eof|buffered|live|cfg|opts|known|reader|src|peek|take|need|rest|fields|varint|opener|append_|chunk0|expectation)$/,
  banner: { js: "// sessioncert client (clients/js), MIT OR Apache-2.0. Source: src/*.ts" },
});

// Declarations: tsc emits one .d.ts per module; the public API is stitched into a single
// file (module-local imports removed, since every declaration lands in the same file).
rmSync(here + "build/types", { recursive: true, force: true });
execFileSync(here + "node_modules/.bin/tsc", ["-p", here + "tsconfig.json", "--emitDeclarationOnly"], { stdio: "inherit" });
const order = ["errors", "sse", "session"];
let dts = "// sessioncert client: type declarations (generated from src/*.ts by scripts/build.mjs)\n";
for (const m of order) {
  let t = readFileSync(`${here}build/types/${m}.d.ts`, "utf8");
  t = t.replace(/^import .*;\n/gm, "").replace(/^export \{\};\n/gm, "");
  dts += `\n// ---- ${m}.ts\n` + t;
}
dts = dts.replace(/^(\s*)private .*;\n/gm, "").replace(/^export declare function parseSse.*\n/m, "");
writeFileSync(here + "dist/sessioncert.d.ts", dts);

const js = readFileSync(here + "dist/sessioncert.js");
console.log(`dist/sessioncert.js: ${js.length} bytes, ${gzipSync(js, { level: 9 }).length} bytes gzip`);
