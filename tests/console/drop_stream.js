/*
 * Deletes the JetStream stream the console test's relay made ($1), so
 * that runs leave nothing behind: one request on NATS's text protocol
 * ($JS.API.STREAM.DELETE.<name>) as the identity of ES_NATS_URL.
 */
"use strict";
const net = require("net");

const name = process.argv[2];
const url = new URL(process.env.ES_NATS_URL || "nats://127.0.0.1:14222");
const sock = net.connect(Number(url.port || 4222), url.hostname);
const connect = { verbose: false, pedantic: false, headers: false, lang: "node", version: "1" };
if (url.username) {
  connect.user = decodeURIComponent(url.username);
  connect.pass = decodeURIComponent(url.password);
}
let buf = "";
sock.setTimeout(3000, () => process.exit(1));
sock.on("data", (d) => {
  buf += d;
  if (buf.startsWith("INFO") && !sock.sent) {
    sock.sent = true;
    sock.write("CONNECT " + JSON.stringify(connect) + "\r\n" +
               "SUB _console_reply 1\r\nPUB $JS.API.STREAM.DELETE." + name + " _console_reply 0\r\n\r\nPING\r\n");
  }
  if (buf.includes("-ERR")) process.exit(1);
  if (buf.includes("MSG _console_reply")) { sock.end(); process.exit(0); }
});
sock.on("error", () => process.exit(1));
