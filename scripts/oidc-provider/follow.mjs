// A browser without a screen, for scripts/interop and README's quick start: follows
// URL's redirects with a cookie jar per host (oidc-provider's interactions and the
// gateway's pages need them), presses the button of the gateway's link page, and
// signs in as PERSON wherever an authorization request is made (login_hint, which
// as.mjs and keyway's testbed take as the person). Prints the last page's status
// and text.
//
//   node follow.mjs URL PERSON
const [url, person] = process.argv.slice(2);
const jar = new Map();
let at = new URL(url);
let method = 'GET';
for (let i = 0; i < 20; i++) {
  if (at.searchParams.get('response_type') === 'code' && !at.searchParams.has('login_hint')) {
    at.searchParams.set('login_hint', person);
  }
  const cookies = jar.get(at.host) || new Map();
  const headers = {};
  if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  const r = await fetch(at, { redirect: 'manual', method, headers });
  method = 'GET';
  for (const c of r.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    cookies.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  jar.set(at.host, cookies);
  const next = r.headers.get('location');
  if (r.status >= 300 && r.status < 400 && next) {
    at = new URL(next, at);
    continue;
  }
  const text = await r.text();
  if (r.status === 200 && text.includes('<form method="post">')) {
    method = 'POST';
    continue;
  }
  process.stdout.write(`${r.status} ${text.replace(/<[^>]*>/g, ' ')}\n`);
  process.exit(0);
}
console.error('too many redirects');
process.exit(1);
