import { describe, expect, it } from "vitest";
import { closeAction } from "../../src/closeCodes.js";
import { ReconnectPolicy, type ReconnectDecision } from "../../src/reconnect.js";

const close = (code: number) => ({ kind: "close" as const, code, action: closeAction(code) });
const delay = (d: ReconnectDecision) => (d.action === "reconnect" ? d.delayMs : -1);

function policy(random?: () => number) {
  return new ReconnectPolicy({ minDelayMs: 100, maxDelayMs: 30_000, minConnectionLifetimeMs: 5_000, reconnectWindowMs: 5_000, random });
}

describe("ReconnectPolicy", () => {
  it("keeps backing off while connections end before they last, whatever the code", () => {
    for (const code of [1011, 1006, 4000, 4001, 1001]) {
      const p = policy(() => 0.5);
      const delays = Array.from({ length: 12 }, () => delay(p.decide(close(code))));
      // At most the first one is free of backoff ("reconnect now" codes); then the caps double.
      const backedOff = code === 4000 || code === 1001 ? delays.slice(1) : delays;
      for (let i = 1; i < backedOff.length; i++) expect(backedOff[i]).toBeGreaterThanOrEqual(backedOff[i - 1]!);
      expect(backedOff.at(-1)).toBeGreaterThanOrEqual(15_000);
      expect(delays.filter((d) => d === 0).length).toBeLessThanOrEqual(1);
    }
  });

  it("starts over only after connectionLasted()", () => {
    const p = policy(() => 0.999999);
    expect([1, 2, 3].map(() => delay(p.decide(close(1011))))).toEqual([100, 200, 400]);
    expect(p.attempt).toBe(3);
    p.connectionLasted();
    expect(p.attempt).toBe(0);
    expect(delay(p.decide(close(1011)))).toBe(100);
    // A "reconnect now" is immediate once per lasting connection.
    p.connectionLasted();
    expect(delay(p.decide(close(4000)))).toBe(0);
    expect(delay(p.decide(close(4000)))).toBe(100);
  });

  it("spreads the reconnects after 1001 uniformly over the window, never all at 0 ms", () => {
    const delays = Array.from({ length: 500 }, () => delay(policy().decide(close(1001))));
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(0);
      expect(d).toBeLessThanOrEqual(5_000);
    }
    expect(new Set(delays).size).toBeGreaterThan(100);
    expect(delays.filter((d) => d < 2_500).length).toBeGreaterThan(100);
    expect(delays.filter((d) => d >= 2_500).length).toBeGreaterThan(100);
  });

  it("stops on a stop code, reconnects at once when asked, and backs off after timeouts", () => {
    const p = policy(() => 0.999999);
    expect(p.decide(close(4002))).toEqual({ action: "stop" });
    expect(p.decide({ kind: "connect-timeout" })).toEqual({ action: "reconnect", delayMs: 100, attempt: 1 });
    expect(p.decide({ kind: "liveness" })).toEqual({ action: "reconnect", delayMs: 200, attempt: 2 });
    expect(p.decide({ kind: "now" })).toEqual({ action: "reconnect", delayMs: 0, attempt: 3 });
  });

  it("backs off on getToken failures, stops on a refusal, and stops after maxTokenRejections 4004s in a row", () => {
    const p = new ReconnectPolicy({ minDelayMs: 100, maxDelayMs: 30_000, minConnectionLifetimeMs: 5_000, reconnectWindowMs: 5_000, maxTokenRejections: 3, random: () => 0.999999 });
    expect(p.decide({ kind: "token-unavailable", reason: "x" })).toEqual({ action: "reconnect", delayMs: 100, attempt: 1 });
    expect(p.decide({ kind: "token-unavailable", reason: "x" })).toEqual({ action: "reconnect", delayMs: 200, attempt: 2 });
    expect(p.decide({ kind: "token-refused" })).toEqual({ action: "stop" });
    p.reset();
    // The first rejection is tried at once, the next one waits; the third in a row stops.
    expect(delay(p.decide({ kind: "token-rejected" }))).toBe(0);
    expect(delay(p.decide({ kind: "token-rejected" }))).toBe(100);
    p.tokenAccepted(); // only rejections in a row count
    expect(delay(p.decide({ kind: "token-rejected" }))).toBe(200);
    expect(delay(p.decide({ kind: "token-rejected" }))).toBe(400);
    expect(p.decide({ kind: "token-rejected" })).toEqual({ action: "stop" });
  });
});
