import { describe, expect, it } from "vitest";
import { FrameError, encodeClientFrame, parseServerFrame } from "../../src/frames.js";

describe("parseServerFrame", () => {
  it("parses every example frame of docs/protocol.md", () => {
    expect(
      parseServerFrame('{"type":"connected","protocol":1,"client_id":"c17","instance_id":"a","user":"42","ping_interval_ms":25000}'),
    ).toEqual({ type: "connected", protocol: 1, client_id: "c17", instance_id: "a", user: "42", ping_interval_ms: 25000 });
    expect(
      parseServerFrame('{"type":"subscribed","id":1,"channel":"news:sport","position":{"offset":45,"epoch":"Zk3j2"},"recovered":true}'),
    ).toEqual({ type: "subscribed", id: 1, channel: "news:sport", position: { offset: 45, epoch: "Zk3j2" }, recovered: true });
    expect(
      parseServerFrame('{"type":"message","channel":"news:sport","offset":43,"epoch":"Zk3j2","data":{"title":"Hello"},"time":1764280000000}'),
    ).toEqual({ type: "message", channel: "news:sport", offset: 43, epoch: "Zk3j2", data: { title: "Hello" }, time: 1764280000000 });
    expect(parseServerFrame('{"type":"unsubscribed","id":2,"channel":"news:sport"}')).toEqual({
      type: "unsubscribed",
      id: 2,
      channel: "news:sport",
    });
    expect(parseServerFrame('{"type":"pong","id":3}')).toEqual({ type: "pong", id: 3 });
    expect(parseServerFrame('{"type":"authenticated","id":4,"user":"42","expires_in_ms":599000}')).toEqual({
      type: "authenticated",
      id: 4,
      user: "42",
      expires_in_ms: 599000,
    });
    expect(parseServerFrame('{"type":"authenticated","user":null}')).toEqual({ type: "authenticated", user: null });
    expect(() => parseServerFrame('{"type":"authenticated","user":7}')).toThrow(FrameError);
    expect(encodeClientFrame({ type: "auth", id: 4, token: "eyJ" })).toBe('{"type":"auth","id":4,"token":"eyJ"}');
    expect(
      parseServerFrame('{"type":"error","id":1,"channel":"user:7","code":"forbidden","message":"user:7 is another user\'s personal channel"}'),
    ).toEqual({ type: "error", id: 1, channel: "user:7", code: "forbidden", message: "user:7 is another user's personal channel" });
    expect(
      parseServerFrame('{"type":"gap","channel":"news:sport","reason":"epoch_changed","position":{"offset":0,"epoch":"Q9x2m"}}'),
    ).toEqual({ type: "gap", channel: "news:sport", reason: "epoch_changed", position: { offset: 0, epoch: "Q9x2m" } });
    expect(parseServerFrame('{"type":"gap","channel":"a","reason":"unrecoverable","position":null}')).toEqual({
      type: "gap",
      channel: "a",
      reason: "unrecoverable",
      position: null,
    });
  });

  it("takes anonymous users, null positions, ephemeral messages and null data", () => {
    expect(parseServerFrame('{"type":"connected","protocol":1,"client_id":"c1","instance_id":"b","user":null}')).toMatchObject({ user: null });
    expect(parseServerFrame('{"type":"subscribed","channel":"events","position":null}')).toEqual({
      type: "subscribed",
      channel: "events",
      position: null,
    });
    const eph = parseServerFrame('{"type":"message","channel":"events","data":"Content published: x","time":5}');
    expect(eph).toEqual({ type: "message", channel: "events", data: "Content published: x", time: 5 });
    expect(parseServerFrame('{"type":"message","channel":"a","offset":null,"epoch":null,"data":null,"time":5}')).toEqual({
      type: "message",
      channel: "a",
      data: null,
      time: 5,
    });
  });

  it("ignores frame types it does not know (forward compatible)", () => {
    expect(parseServerFrame('{"type":"something_new","x":1}')).toBeUndefined();
  });

  it("rejects what is not a frame", () => {
    for (const text of ["", "nope", "[]", "1", "null", '{"no":"type"}', '{"type":7}']) {
      expect(() => parseServerFrame(text), text).toThrow(FrameError);
    }
  });

  it("rejects known frames that miss required fields or carry bad ones", () => {
    for (const text of [
      '{"type":"subscribed"}',
      '{"type":"subscribed","channel":"a","position":{"offset":"1","epoch":"e"}}',
      '{"type":"subscribed","channel":"a","position":null,"recovered":"yes"}',
      '{"type":"message","data":1,"time":1}',
      '{"type":"message","channel":"a","time":1}',
      '{"type":"message","channel":"a","data":1,"time":1,"offset":3}',
      '{"type":"message","channel":"a","data":1,"time":1,"offset":-1,"epoch":"e"}',
      '{"type":"error","message":"x"}',
      '{"type":"connected"}',
      '{"type":"gap","reason":"unrecoverable","position":null}',
      '{"type":"gap","channel":"a","position":null}',
      '{"type":"gap","channel":"a","reason":"unrecoverable","position":{"offset":1}}',
    ]) {
      expect(() => parseServerFrame(text), text).toThrow(FrameError);
    }
  });
});

describe("encodeClientFrame", () => {
  it("writes the frames of docs/protocol.md", () => {
    expect(
      encodeClientFrame({
        type: "subscribe",
        id: 1,
        channels: [{ channel: "news:sport", since: { offset: 41, epoch: "Zk3j2" } }, { channel: "user:42" }],
      }),
    ).toBe('{"type":"subscribe","id":1,"channels":[{"channel":"news:sport","since":{"offset":41,"epoch":"Zk3j2"}},{"channel":"user:42"}]}');
    expect(encodeClientFrame({ type: "unsubscribe", id: 2, channels: ["news:sport"] })).toBe(
      '{"type":"unsubscribe","id":2,"channels":["news:sport"]}',
    );
    expect(encodeClientFrame({ type: "ping", id: 3 })).toBe('{"type":"ping","id":3}');
  });
});
