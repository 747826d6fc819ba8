import { describe, expect, it } from "vitest";
import { Backoff } from "../../src/backoff.js";

describe("Backoff (exponential, full jitter)", () => {
  it("doubles the cap from min to max, then stays at max", () => {
    const b = new Backoff({ minDelayMs: 100, maxDelayMs: 30_000, random: () => 0.5 });
    const caps = Array.from({ length: 12 }, () => b.next().capMs);
    expect(caps).toEqual([100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
  });

  it("draws every delay in [0, cap], reaching both ends", () => {
    const lo = new Backoff({ minDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
    const hi = new Backoff({ minDelayMs: 100, maxDelayMs: 1000, random: () => 0.999999999 });
    for (let i = 0; i < 8; i++) {
      const a = lo.next();
      const b = hi.next();
      expect(a.delayMs).toBe(0);
      expect(b.delayMs).toBe(b.capMs);
    }
  });

  it("stays within bounds with Math.random over many draws, and is not constant", () => {
    const b = new Backoff({ minDelayMs: 100, maxDelayMs: 30_000 });
    const seen = new Set<number>();
    for (let round = 0; round < 50; round++) {
      b.reset();
      for (let i = 1; i <= 15; i++) {
        const step = b.next();
        expect(step.attempt).toBe(i);
        expect(step.delayMs).toBeGreaterThanOrEqual(0);
        expect(step.delayMs).toBeLessThanOrEqual(step.capMs);
        expect(step.capMs).toBeLessThanOrEqual(30_000);
        expect(Number.isInteger(step.delayMs)).toBe(true);
        seen.add(step.delayMs);
      }
    }
    expect(seen.size).toBeGreaterThan(100);
  });

  it("starts again from min after reset()", () => {
    const b = new Backoff({ minDelayMs: 50, maxDelayMs: 5000, random: () => 0.999 });
    b.next();
    b.next();
    expect(b.next().capMs).toBe(200);
    b.reset();
    expect(b.attempts).toBe(0);
    const s = b.next();
    expect(s).toMatchObject({ attempt: 1, capMs: 50 });
  });

  it("tolerates huge attempt counts and a max below min", () => {
    const b = new Backoff({ minDelayMs: 100, maxDelayMs: 30_000 });
    expect(b.capFor(10_000)).toBe(30_000);
    const odd = new Backoff({ minDelayMs: 500, maxDelayMs: 10 });
    expect(odd.next().capMs).toBe(500);
    expect(odd.next().capMs).toBe(500);
  });
});
