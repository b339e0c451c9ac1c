// test-vectors/replay-window.json checks the test-side server's replay window (§9), which
// the server_open_cases of records and streams rely on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { load } from "./helpers.mjs";
import { ReplayWindow } from "./server-side.mjs";

for (const c of load("replay-window.json").cases)
  test(`replay window ${c.name}`, () => {
    const w = new ReplayWindow();
    for (const s of c.steps) {
      const ok = w.accepts(s.seq);
      assert.equal(ok ? "accept" : "rejected", s.expect, `seq ${s.seq}`);
      if (ok) w.mark(s.seq);
    }
    assert.equal(w.encode(), c.state);
  });
