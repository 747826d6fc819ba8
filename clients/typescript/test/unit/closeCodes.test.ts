import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { CLOSE_CODES, CloseCode, closeAction, closeCodeInfo, closeNeedsNewToken, closeSpreadsReconnect } from "../../src/closeCodes.js";

const PROTOCOL_MD = fileURLToPath(new URL("../../../../docs/protocol.md", import.meta.url));

describe("close codes", () => {
  it("decide exactly as the table of docs/protocol.md says", () => {
    expect(closeAction(1001)).toBe("reconnect-now");
    expect(closeAction(4000)).toBe("reconnect-now");
    expect(closeAction(4005)).toBe("reconnect-now");
    for (const code of [1011, 4001, 4003, 4006, 4007]) expect(closeAction(code)).toBe("reconnect-backoff");
    for (const code of [1002, 1003, 1007, 1009, 4002, 4004]) expect(closeAction(code)).toBe("stop");
  });

  it("spread only 1001, which an instance sends to all its clients at once", () => {
    expect(CLOSE_CODES.filter((c) => c.spread).map((c) => c.code)).toEqual([1001]);
    expect(closeSpreadsReconnect(1001)).toBe(true);
    expect(closeSpreadsReconnect(4000)).toBe(false);
    expect(closeSpreadsReconnect(1006)).toBe(false);
  });

  it("mark the token codes", () => {
    expect(closeNeedsNewToken(CloseCode.Unauthorized)).toBe(true);
    expect(closeNeedsNewToken(CloseCode.TokenExpired)).toBe(true);
    expect(CLOSE_CODES.filter((c) => c.needsNewToken).map((c) => c.code)).toEqual([4004, 4005]);
  });

  it("reconnect with backoff on codes the table does not list (dropped connection, refused, …)", () => {
    for (const code of [1000, 1005, 1006, 1015, 4999, 3000]) {
      expect(closeCodeInfo(code)).toBeUndefined();
      expect(closeAction(code)).toBe("reconnect-backoff");
      expect(closeNeedsNewToken(code)).toBe(false);
    }
  });

  it("have unique codes and reasons that fit a close frame", () => {
    const codes = CLOSE_CODES.map((c) => c.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of CLOSE_CODES) expect(new TextEncoder().encode(c.reason).length).toBeLessThanOrEqual(123);
  });

  // Never skipped: a docs file that moved must break this test, not silently
  // retire the only check that the client's table and the protocol agree.
  it("mirror docs/protocol.md row by row", () => {
    if (!existsSync(PROTOCOL_MD)) {
      throw new Error(`docs/protocol.md not found at ${PROTOCOL_MD}: the close-code table cannot be checked (moved? update PROTOCOL_MD)`);
    }
    const md = readFileSync(PROTOCOL_MD, "utf8");
    expect(md).toContain("## Close codes");
    const section = md.slice(md.indexOf("## Close codes"));
    const rows = section
      .split("\n")
      .filter((l) => /^\| \d{4} \|/.test(l))
      .map((l) => l.split("|").map((c) => c.trim()));
    expect(rows.length).toBeGreaterThan(0);
    const fromDoc = rows.map(([, code, reason, , action]) => {
      const a = action!;
      const parsed = a.startsWith("reconnect now") ? "reconnect-now" : a.startsWith("reconnect with backoff") ? "reconnect-backoff" : a.startsWith("stop") ? "stop" : `?${a}`;
      return { code: Number(code), reason: reason!.replace(/`/g, ""), action: parsed };
    });
    expect(CLOSE_CODES.map(({ code, reason, action }) => ({ code, reason, action }))).toEqual(fromDoc);
  });
});
