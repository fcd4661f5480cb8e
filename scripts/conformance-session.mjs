// A stdio MCP client of a handshake revision for the conformance scenarios that need
// a session's worth of operations: it runs the command given (`keyway proxy URL ...`)
// and, through it, lists and calls every tool (no arguments), lists and reads every
// resource, lists and gets every prompt. The protocol work, 2026-07-28 included, is
// keyway's. Exits 1 when keyway fails to answer something (a JSON-RPC error from the
// server itself is an answer).
//
//   node conformance-session.mjs <command> [args...]
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const [command, ...args] = process.argv.slice(2);
const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
const waiting = new Map();
let next = 1;
createInterface({ input: child.stdout }).on('line', (line) => {
  const m = JSON.parse(line);
  if (m.method && m.id !== undefined) {
    // The server's own questions: decline, answer no roots.
    const result = m.method === 'roots/list' ? { roots: [] } : { action: 'decline' };
    child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, result }) + '\n');
  } else if (m.id !== undefined && waiting.has(m.id)) {
    waiting.get(m.id)(m);
    waiting.delete(m.id);
  }
});
const request = (method, params = {}) => new Promise((resolve) => {
  const id = next++;
  waiting.set(id, resolve);
  child.stdin.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
});
let failed = 0;
const expectAnswer = (what, m) => {
  // keyway's own refusals use -32000 ("could not deliver"); anything else is the server's.
  const ours = m.error && m.error.code === -32000;
  console.log(`${ours ? 'FAIL' : 'ok  '} ${what}${m.error ? `: ${m.error.message}` : ''}`);
  if (ours) failed++;
  return m.result || {};
};
const deadline = setTimeout(() => { console.log('FAIL timed out'); process.exit(1); }, 60_000);

const init = expectAnswer('initialize', await request('initialize', {
  protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'keyway-conformance', version: '1' },
}));
child.stdin.write(JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) + '\n');
const caps = init.capabilities || {};
if (caps.tools) {
  for (const tool of expectAnswer('tools/list', await request('tools/list')).tools || []) {
    expectAnswer(`tools/call ${tool.name}`, await request('tools/call', { name: tool.name, arguments: {} }));
  }
}
if (caps.resources) {
  for (const r of expectAnswer('resources/list', await request('resources/list')).resources || []) {
    expectAnswer(`resources/read ${r.uri}`, await request('resources/read', { uri: r.uri }));
  }
}
if (caps.prompts) {
  for (const p of expectAnswer('prompts/list', await request('prompts/list')).prompts || []) {
    expectAnswer(`prompts/get ${p.name}`, await request('prompts/get', { name: p.name, arguments: {} }));
  }
}
clearTimeout(deadline);
child.stdin.end();
child.on('exit', (code) => process.exit(failed || code ? 1 : 0));
