// An MCP client from the official TypeScript SDK, on the stdio of a keyway command
// (`keyway proxy NAME` or `keyway serve`), in front of server-everything. It checks that
// everything travels through keyway both ways: tools, prompts, resources, sampling and
// elicitation requests from the server, progress, and logging notifications.
//
//   node client.mjs <prefix> <command> [args...]      (prefix: "" for proxy, "NAME__" for serve)
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';

const [prefix, command, ...args] = process.argv.slice(2);
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
let sampled = 0;
let elicited = 0;
let logged = 0;
client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
  sampled++;
  return { model: 'peer-test-model', role: 'assistant', content: { type: 'text', text: `sampled reply to ${req.params.messages.length} message(s)` } };
});
client.setRequestHandler(ElicitRequestSchema, async () => {
  elicited++;
  return { action: 'decline' };
});
client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: [{ uri: 'file:///tmp', name: 'tmp' }] }));
client.setNotificationHandler(LoggingMessageNotificationSchema, async () => { logged++; });

const transport = new StdioClientTransport({ command, args, env: process.env, stderr: 'inherit' });
const deadline = setTimeout(() => { console.log('FAIL timed out'); process.exit(1); }, 90_000);
try {
  await client.connect(transport);
  check('initialize', !!client.getServerVersion(), JSON.stringify(client.getServerVersion()));

  const tools = (await client.listTools()).tools.map((t) => t.name);
  for (const t of ['echo', 'get-sum', 'trigger-sampling-request', 'trigger-elicitation-request', 'trigger-long-running-operation']) {
    check(`tools/list has ${prefix}${t}`, tools.includes(prefix + t));
  }
  const echo = await client.callTool({ name: `${prefix}echo`, arguments: { message: 'through keyway' } });
  check('tools/call echo', textOf(echo).includes('through keyway'), textOf(echo));
  const sum = await client.callTool({ name: `${prefix}get-sum`, arguments: { a: 2, b: 3 } });
  check('tools/call get-sum', textOf(sum).includes('5'), textOf(sum));

  const sample = await client.callTool({ name: `${prefix}trigger-sampling-request`, arguments: { prompt: 'hello', maxTokens: 20 } });
  check('sampling request reached the client and its answer the server', sampled === 1 && textOf(sample).includes('sampled reply'), textOf(sample).slice(0, 120));
  const elicit = await client.callTool({ name: `${prefix}trigger-elicitation-request`, arguments: {} });
  check('elicitation request reached the client and its answer the server', elicited === 1 && /decline/i.test(textOf(elicit)), textOf(elicit).slice(0, 120));

  let progress = 0;
  await client.callTool(
    { name: `${prefix}trigger-long-running-operation`, arguments: { duration: 1, steps: 3 } },
    undefined,
    { onprogress: () => { progress++; }, timeout: 30_000 },
  );
  check('progress notifications', progress >= 2, `${progress} received`);

  const prompts = (await client.listPrompts()).prompts.map((p) => p.name);
  check(`prompts/list has ${prefix}args-prompt`, prompts.includes(`${prefix}args-prompt`), prompts.join(','));
  const prompt = await client.getPrompt({ name: `${prefix}args-prompt`, arguments: { city: 'Paris' } });
  check('prompts/get', JSON.stringify(prompt.messages).includes('Paris'));

  const resources = (await client.listResources()).resources;
  check('resources/list', resources.length > 0, `${resources.length} resources`);
  if (resources.length) {
    const read = await client.readResource({ uri: resources[0].uri });
    check('resources/read', (read.contents || []).length > 0, resources[0].uri);
  }
  const templates = (await client.listResourceTemplates()).resourceTemplates;
  check('resources/templates/list', templates.length > 0, `${templates.length} templates`);
  const dynamic = await client.readResource({ uri: 'demo://resource/dynamic/text/1' });
  check('resources/read of a templated URI', (dynamic.contents || []).length > 0);

  await client.callTool({ name: `${prefix}toggle-simulated-logging`, arguments: {} });
  const until = Date.now() + 15_000;
  while (logged === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
  check('logging notifications from the server', logged > 0, `${logged} received`);
  await client.callTool({ name: `${prefix}toggle-simulated-logging`, arguments: {} });
} catch (e) {
  check('no exception', false, String(e && e.stack || e));
} finally {
  clearTimeout(deadline);
  await client.close().catch(() => {});
}
console.log(failures.length ? `${failures.length} check(s) failed` : 'all checks passed');
process.exit(failures.length ? 1 : 0);
