// A loopback HTTP proxy that adds `Authorization: Bearer <token>` to every request and
// passes everything else through as it is (method, path, headers including Host and
// Origin, body, streamed answers). The conformance suite's server runner sends no
// credentials; `keyway serve --listen` always wants its token.
//
//   node token-proxy.mjs TARGET_URL TOKEN_FILE     (prints its own URL, then serves)
import http from "node:http";
import fs from "node:fs";

const [target, tokenFile] = process.argv.slice(2);
const to = new URL(target);
const token = fs.readFileSync(tokenFile, "utf8").trim();

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, authorization: `Bearer ${token}` };
  const upstream = http.request(
    { host: to.hostname, port: to.port, method: req.method, path: req.url, headers },
    (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    },
  );
  upstream.on("error", (e) => {
    if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
    res.end(`token-proxy: ${e.message}`);
  });
  req.pipe(upstream);
  res.on("close", () => upstream.destroy());
});
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  console.log(`http://127.0.0.1:${port}${to.pathname}`);
});
