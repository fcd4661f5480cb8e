// An MCP client from the official TypeScript SDK 1.x (it speaks the 2025 handshake
// revisions) on the stdio of `keyway proxy`, in front of keyway's testbed serving only
// MCP 2026-07-28. keyway translates: the checks are that the old client cannot tell.
// The server's elicitation, sampling and roots questions (multi round-trip requests
// upstream) reach this client as the server requests it knows, and its answers
// complete the calls; a resource subscription delivers updates.
//
//   node client-modern.mjs <command> [args...]
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  ResourceUpdatedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const [command, ...args] = process.argv.slice(2);
const failures = [];
const check = (name, ok, detail = '') => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  if (!ok) failures.push(name);
};
const textOf = (r) => (r.content || []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

const client = new Client(
  { name: 'keyway-peer-client', version: '1.0.0' },
  { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } },
);
const asked = { sampling: 0, elicitation: 0, roots: 0 };
let updated = 0;
client.setRequestHandler(CreateMessageRequestSchema, async () => {
  asked.sampling++;
  return { model: 'peer-test-model', role: 'assistant', content: { type: 'text', text: 'a haiku from the peer' } };
});
client.setRequestHandler(ElicitRequestSchema, async (req) => {
  asked.elicitation++;
  const wantsName = !!req.params.requestedSchema?.properties?.name;
  return wantsName ? { action: 'accept', content: { name: 'Ada' } } : { action: 'decline' };
});
client.setRequestHandler(ListRootsRequestSchema, async () => {
  asked.roots++;
  return { roots: [{ uri: 'file:///work/peer', name: 'peer' }] };
});
client.setNotificationHandler(ResourceUpdatedNotificationSchema, async () => { updated++; });

const transport = new StdioClientTransport({ command, args, env: process.env, stderr: 'inherit' });
const deadline = setTimeout(() => { console.log('FAIL timed out'); process.exit(1); }, 90_000);
try {
  await client.connect(transport);
  const server = client.getServerVersion();
  check('initialize (answered by keyway from server/discover)', server?.name === 'keyway-testbed', JSON.stringify(server));
  await client.ping();
  check('ping', true);
  await client.setLoggingLevel('info').then(() => check('logging/setLevel', true), (e) => check('logging/setLevel', false, String(e)));

  const tools = (await client.listTools()).tools.map((t) => t.name);
  for (const t of ['echo', 'ask_name', 'sample', 'list_roots', 'two_rounds']) check(`tools/list has ${t}`, tools.includes(t));
  const echo = await client.callTool({ name: 'echo', arguments: { text: 'through keyway' } });
  check('tools/call echo', textOf(echo) === 'through keyway', textOf(echo));

  const name = await client.callTool({ name: 'ask_name', arguments: {} });
  check('elicitation round trip', asked.elicitation === 1 && textOf(name) === 'name Ada', textOf(name));
  const sample = await client.callTool({ name: 'sample', arguments: {} });
  check('sampling round trip', asked.sampling === 1 && textOf(sample) === 'sampled a haiku from the peer', textOf(sample));
  const roots = await client.callTool({ name: 'list_roots', arguments: {} });
  check('roots round trip', asked.roots === 1 && textOf(roots) === 'roots [file:///work/peer]', textOf(roots));
  const two = await client.callTool({ name: 'two_rounds', arguments: {} });
  check('two rounds', textOf(two) === 'name Ada; sampled a haiku from the peer', textOf(two));

  const prompt = await client.getPrompt({ name: 'greet', arguments: { name: 'Ada' } });
  check('prompts/get', JSON.stringify(prompt.messages).includes('Say hello to Ada.'));
  const resources = (await client.listResources()).resources.map((r) => r.uri);
  check('resources/list', resources.includes('testbed://readme'), resources.join(','));
  const read = await client.readResource({ uri: 'testbed://readme' });
  check('resources/read', (read.contents || []).length === 1);

  await client.subscribeResource({ uri: 'testbed://readme' });
  // keyway opens subscriptions/listen for it: touch until the server counts it.
  const until = Date.now() + 20_000;
  while (updated === 0 && Date.now() < until) {
    await client.callTool({ name: 'touch', arguments: {} });
    await new Promise((r) => setTimeout(r, 100));
  }
  check('resources/subscribe delivers notifications/resources/updated', updated > 0, `${updated} received`);
} catch (e) {
  check('no exception', false, String(e && e.stack || e));
} finally {
  clearTimeout(deadline);
  await client.close().catch(() => {});
}
console.log(failures.length ? `${failures.length} check(s) failed` : 'all checks passed');
process.exit(failures.length ? 1 : 0);
