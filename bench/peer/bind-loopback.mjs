// Preloaded into server-everything (which listens on every interface): make a bare
// `listen(port)` bind 127.0.0.1 instead, so the run never opens a port to the network.
import net from 'node:net';

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const bare = (typeof args[0] === 'number' || /^\d+$/.test(String(args[0])))
    && (args.length === 1 || typeof args[1] === 'function');
  if (bare) args.splice(1, 0, '127.0.0.1');
  return listen.apply(this, args);
};
