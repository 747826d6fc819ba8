// Chaos-test participants speaking /ws through the built @herald/client (dist/).
//
// crates/herald/tests/chaos.rs starts this script as a separate Node process
// (so it can SIGSTOP one of them) with one argument, a JSON plan:
//
//   {"clients":[{"id":"ts0","urls":["ws://a/ws","ws://b/ws"],"channels":["news:a",…]}, …]}
//
// and reads what every client saw from stdout, one JSON object per line:
//
//   {"c":"ts0","t":"state","state":"connected","instance":"a"}
//   {"c":"ts0","t":"state","state":"disconnected","code":4001}
//   {"c":"ts0","t":"subscribed","ch":"news:a","pos":{"offset":3,"epoch":"…"},"rec":true}
//   {"c":"ts0","t":"recovered","ch":"news:a","rec":true,"missed":4}
//   {"c":"ts0","t":"msg","ch":"news:a","o":4,"e":"…","d":{…}}
//   {"c":"ts0","t":"error","frame":{…}}            an error frame from the server
//   {"c":"ts0","t":"signal","what":"…"}            anything else the client reported
//   {"c":"ts0","t":"stats","dropped":{"news:a":0}} once per client after "stats" on stdin
//
// It only reports: the Rust test decides what is right. It exits when stdin closes.
import { createInterface } from "node:readline";
import { HeraldClient } from "../../dist/index.js";

// Node 22 has a global WebSocket; Node 20 takes the `ws` package (a dev dependency).
const WebSocket = globalThis.WebSocket ?? (await import("ws")).default;

const plan = JSON.parse(process.argv[2] ?? "{}");
if (!Array.isArray(plan.clients) || plan.clients.length === 0) {
  process.stderr.write("usage: driver.mjs '{\"clients\":[{\"id\",\"urls\",\"channels\"}]}'\n");
  process.exit(2);
}

const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");

const clients = plan.clients.map(({ id, urls, channels }) => {
  const client = new HeraldClient({
    url: urls,
    WebSocket,
    minReconnectDelayMs: 50,
    maxReconnectDelayMs: 1000,
    // 1001 spreads reconnects over this window; kept short like the backoff, for a 40 s run.
    reconnectWindowMs: 1000,
  });
  client.on("state", (s) => {
    const line = { c: id, t: "state", state: s.state };
    if (s.instanceId !== undefined) line.instance = s.instanceId;
    if (s.code !== undefined) line.code = s.code;
    if (s.url !== undefined) line.url = s.url;
    out(line);
  });
  client.on("recovered", (r) => out({ c: id, t: "recovered", ch: r.channel, rec: r.recovered, missed: r.missed }));
  client.on("error", (frame) => out({ c: id, t: "error", frame }));
  // Whatever else this client version reports — a frame it does not know
  // (`invalidFrame`), or any event a newer version adds (a new epoch, a gap) —
  // is a signal, and the test counts it as an announced gap. Events go through
  // the client's own `emit`, so wrapping it sees every one, whatever its name.
  const emit = client.emit.bind(client);
  client.emit = (event, value) => {
    if (!["state", "recovered", "error"].includes(event)) {
      out({ c: id, t: "signal", what: event, value: String(value?.message ?? JSON.stringify(value)) });
    }
    return emit(event, value);
  };
  for (const ch of channels) {
    const sub = client.subscribe(ch, (m) => out({ c: id, t: "msg", ch: m.channel, o: m.offset, e: m.epoch, d: m.data }));
    sub.on("subscribed", (s) => out({ c: id, t: "subscribed", ch: s.channel, pos: s.position, rec: s.recovered }));
  }
  client.connect().catch((e) => out({ c: id, t: "signal", what: "connect-failed", value: String(e) }));
  return { id, client, channels };
});

const input = createInterface({ input: process.stdin });
input.on("line", (line) => {
  if (line.trim() !== "stats") return;
  for (const { id, client, channels } of clients) {
    const dropped = {};
    for (const ch of channels) dropped[ch] = client.duplicatesDropped(ch);
    out({ c: id, t: "stats", dropped });
  }
});
input.on("close", () => {
  for (const { client } of clients) client.close();
  process.exit(0);
});
