import { describe, expect, it } from "vitest";
import { ChannelPositions, isDuplicate } from "../../src/positions.js";

describe("dedupe and resume positions", () => {
  it("delivers increasing offsets and drops any offset <= the last seen in the same epoch", () => {
    const p = new ChannelPositions();
    expect(p.message(1, "e")).toBe("deliver");
    expect(p.message(2, "e")).toBe("deliver");
    expect(p.message(2, "e")).toBe("duplicate");
    expect(p.message(1, "e")).toBe("duplicate");
    expect(p.message(3, "e")).toBe("deliver");
    expect(p.resumeFrom).toEqual({ offset: 3, epoch: "e" });
  });

  it("starts over on a new epoch (the history was reset)", () => {
    const p = new ChannelPositions();
    p.message(50, "old");
    expect(p.message(1, "new")).toBe("deliver");
    expect(p.message(1, "new")).toBe("duplicate");
    expect(p.resumeFrom).toEqual({ offset: 1, epoch: "new" });
  });

  it("always delivers ephemeral messages (no offset) and does not move for them", () => {
    const p = new ChannelPositions();
    p.message(5, "e");
    expect(p.message(undefined, undefined)).toBe("deliver");
    expect(p.message(undefined, undefined)).toBe("deliver");
    expect(p.resumeFrom).toEqual({ offset: 5, epoch: "e" });
  });

  it("resumes from subscribed.position when no message was seen yet", () => {
    const p = new ChannelPositions();
    p.subscribed({ offset: 45, epoch: "e" }, undefined);
    expect(p.resumeFrom).toEqual({ offset: 45, epoch: "e" });
    // ... but that position alone does not make a live message a duplicate
    expect(p.lastSeen).toBeUndefined();
    // once subscribed again with it as `since`, everything up to it is old
    p.subscribedWithSince({ offset: 45, epoch: "e" });
    expect(p.message(45, "e")).toBe("duplicate");
    expect(p.message(46, "e")).toBe("deliver");
  });

  it("keeps the position of the last message over a later subscribed.position", () => {
    const p = new ChannelPositions();
    p.message(10, "e");
    p.subscribedWithSince({ offset: 10, epoch: "e" });
    p.subscribed({ offset: 110, epoch: "e" }, true); // recovery of 11..110 follows
    expect(p.resumeFrom).toEqual({ offset: 10, epoch: "e" });
    for (let o = 11; o <= 110; o++) expect(p.message(o, "e")).toBe("deliver");
    expect(p.message(60, "e")).toBe("duplicate");
    expect(p.resumeFrom).toEqual({ offset: 110, epoch: "e" });
  });

  it("goes on from the channel's position when recovery failed", () => {
    const p = new ChannelPositions({ offset: 3, epoch: "old" });
    p.subscribed({ offset: 7, epoch: "new" }, false);
    expect(p.resumeFrom).toEqual({ offset: 7, epoch: "new" });
    expect(p.message(8, "new")).toBe("deliver");
  });

  it("treats an initial since as already seen", () => {
    const p = new ChannelPositions({ offset: 41, epoch: "Zk3j2" });
    expect(p.resumeFrom).toEqual({ offset: 41, epoch: "Zk3j2" });
    expect(p.message(41, "Zk3j2")).toBe("duplicate");
    expect(p.message(42, "Zk3j2")).toBe("deliver");
  });

  it("isDuplicate is the same rule as a pure function", () => {
    expect(isDuplicate(undefined, 1, "e")).toBe(false);
    expect(isDuplicate({ offset: 3, epoch: "e" }, 3, "e")).toBe(true);
    expect(isDuplicate({ offset: 3, epoch: "e" }, 4, "e")).toBe(false);
    expect(isDuplicate({ offset: 3, epoch: "e" }, 1, "f")).toBe(false);
    expect(isDuplicate({ offset: 3, epoch: "e" }, undefined, undefined)).toBe(false);
  });
});
