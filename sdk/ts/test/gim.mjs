// Starts a real local gim for the SDK's tests: one logic and two conn nodes from the debug
// binaries (cargo build -p gim-logic -p gim-conn -p gim-client), on free ports of 127.0.0.1 so it
// never collides with scripts/run-local.sh or another checkout's tests, with its own database
// (gim_sdk) and Redis db (7), and a fresh app per run. Config goes in GIM_SECTION__KEY variables;
// GIM_SDK_LOGIC_ENV / GIM_SDK_CONN_ENV (JSON objects) add more, e.g. settings of a newer server.
import { spawn, execFile } from 'node:child_process';
import { once } from 'node:events';
import { randomBytes } from 'node:crypto';
import { createServer, connect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const BIN = process.env.GIM_SDK_BIN_DIR || join(process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/gim-target'), 'debug');
const MYSQL = process.env.GIM_SDK_MYSQL_URL || 'mysql://gim:gim@127.0.0.1:3306/gim_sdk';
const REDIS = process.env.GIM_SDK_REDIS_URL || 'redis://127.0.0.1:6379/7';
/** Logic's sync page: small, so that paging with has_more is exercised by a dozen messages. */
export const PAGE = 5;
/** Conn's WebSocket idle timeout: a client without heartbeats is closed by the server after it. */
export const IDLE_SECS = 2;

// The binaries read every GIM_* variable as config (GIM_<SECTION>__<KEY>, a bare GIM_X as key x):
// they get only what is set here, none of the caller's.
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('GIM_')));

async function freePort() {
  const srv = createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

async function waitPort(port, proc, name) {
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    if (proc.exitCode !== null) throw new Error(`${name} exited (${proc.exitCode}):\n${proc.logs.join('')}`);
    const ok = await new Promise((resolve) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not open port ${port}:\n${proc.logs.join('')}`);
}

function startProc(name, bin, env) {
  const proc = spawn(join(BIN, bin), [], {
    env: { ...baseEnv, RUST_LOG: '', GIM_LOG__FILTER: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // Kept (bounded) for the failure message; never printed on success.
  proc.logs = [];
  const keep = (b) => { proc.logs.push(b.toString()); if (proc.logs.length > 200) proc.logs.shift(); };
  proc.stdout.on('data', keep);
  proc.stderr.on('data', keep);
  return proc;
}

async function cli(bin, args, env = {}) {
  const { stdout } = await run(join(BIN, bin), args, { env: { ...baseEnv, ...env } });
  return stdout.trim();
}

/** The cluster's pieces; see {@link startGim}. */
export async function startGim() {
  await createDatabase();
  // The internal APIs (LogicInt, ConnInt) take only calls carrying the cluster's shared secret.
  const secret = randomBytes(18).toString('base64url');
  const logicEnv = {
    GIM_INTERNAL__SECRET: secret,
    GIM_MYSQL__URL: MYSQL,
    GIM_REDIS__URL: REDIS,
    GIM_LOGIC__INT_LISTEN: `127.0.0.1:${await freePort()}`,
    GIM_LOGIC__CLIENT_LISTEN: `127.0.0.1:${await freePort()}`,
    GIM_LOGIC__SERVER_LISTEN: `127.0.0.1:${await freePort()}`,
    GIM_LOGIC__ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
    GIM_LOGIC__SYNC_PAGE_SIZE: String(PAGE),
    ...(process.env.GIM_SDK_LOGIC_ENV ? JSON.parse(process.env.GIM_SDK_LOGIC_ENV) : {}),
  };
  await cli('gim-logic', ['migrate'], logicEnv);
  const port = (addr) => Number(addr.split(':')[1]);
  const logic = startProc('logic', 'gim-logic', logicEnv);
  for (const k of ['GIM_LOGIC__INT_LISTEN', 'GIM_LOGIC__CLIENT_LISTEN', 'GIM_LOGIC__SERVER_LISTEN']) {
    await waitPort(port(logicEnv[k]), logic, 'gim-logic');
  }
  const serverUrl = `http://${logicEnv.GIM_LOGIC__SERVER_LISTEN}`;
  const clientUrl = `http://${logicEnv.GIM_LOGIC__CLIENT_LISTEN}`;

  const conns = {};
  for (const name of ['a', 'b']) {
    const env = {
      GIM_INTERNAL__SECRET: secret,
      GIM_REDIS__URL: REDIS,
      GIM_CONN__NODE_NAME: `sdk-test-${name}`,
      GIM_CONN__TCP_LISTEN: `127.0.0.1:${await freePort()}`,
      GIM_CONN__WS_LISTEN: `127.0.0.1:${await freePort()}`,
      GIM_CONN__GRPC_LISTEN: `127.0.0.1:${await freePort()}`,
      GIM_CONN__ADMIN_LISTEN: `127.0.0.1:${await freePort()}`,
      GIM_CONN__LOGIC_URL: `http://${logicEnv.GIM_LOGIC__INT_LISTEN}`,
      GIM_CONN__WS_IDLE_TIMEOUT_SECS: String(IDLE_SECS),
      // A drain tells every client at once; a killed node's routes expire quickly.
      GIM_CONN__DRAIN_WINDOW_SECS: '0',
      GIM_CONN__LEASE_SECS: '3',
      ...(process.env.GIM_SDK_CONN_ENV ? JSON.parse(process.env.GIM_SDK_CONN_ENV) : {}),
    };
    conns[name] = { env, url: `ws://${env.GIM_CONN__WS_LISTEN}/ws`, proc: null };
  }
  const startConn = async (name) => {
    const c = conns[name];
    c.proc = startProc(`conn-${name}`, 'gim-conn', c.env);
    for (const k of ['GIM_CONN__GRPC_LISTEN', 'GIM_CONN__WS_LISTEN']) await waitPort(port(c.env[k]), c.proc, `gim-conn ${name}`);
  };
  await startConn('a');
  await startConn('b');

  const created = await cli('gim-logic', ['app', 'create', '--name', `sdk-test-${Date.now()}`], logicEnv);
  const appId = BigInt(/^app_id: (\d+)$/m.exec(created)[1]);
  const key = /^private_key: (\S+)$/m.exec(created)[1];
  const app = ['--app-id', String(appId), `--key=${key}`];
  let nextUser = 1;

  const gim = {
    appId,
    key,
    serverUrl,
    clientUrl,
    urls: [conns.a.url, conns.b.url],
    url: (name) => conns[name].url,
    /** Fresh users of the app (ids unique within this run). */
    async users(n) {
      const ids = Array.from({ length: n }, () => nextUser++);
      await cli('gim', ['user', 'import', ...app, '--server-url', serverUrl, '--users', ids.join(',')]);
      return ids.map(BigInt);
    },
    /** A new device and a device token for it: what GimClient signs in with. */
    async credentials(userId) {
      const deviceId = BigInt(await cli('gim', ['device', 'register', '--app-id', String(appId), '--client-url', clientUrl]));
      const token = await cli('gim', ['token', 'device', ...app, '--user', String(userId), '--device', String(deviceId)]);
      return { appId, userId, deviceId, token };
    },
    async group(owner, members, { large = false } = {}) {
      const args = ['group', 'create', ...app, '--server-url', serverUrl, '--name', 'sdk-test', '--owner', String(owner), '--members', members.join(',')];
      if (large) args.push('--large');
      return BigInt(await cli('gim', args));
    },
    /** Stops a conn node: SIGTERM drains (RECONNECT to every client), SIGKILL just dies. */
    async stopConn(name, signal = 'SIGTERM') {
      const p = conns[name].proc;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      p.kill(signal);
      await once(p, 'exit');
    },
    startConn,
    async stop() {
      for (const c of Object.values(conns)) c.proc?.kill('SIGKILL');
      logic.kill('SIGKILL');
      await Promise.all([logic, ...Object.values(conns).map((c) => c.proc)]
        .filter((p) => p && p.exitCode === null && p.signalCode === null)
        .map((p) => once(p, 'exit')));
    },
  };
  return gim;
}

async function createDatabase() {
  const m = /^mysql:\/\/([^:]+):([^@]+)@([^:/]+):(\d+)\/(\w+)$/.exec(MYSQL);
  if (!m) return; // a URL of another shape names a database that exists already
  const [, user, pass, host, port, db] = m;
  await run('mariadb', [`-u${user}`, `-p${pass}`, `-h${host}`, `-P${port}`, '-e', `CREATE DATABASE IF NOT EXISTS \`${db}\` CHARACTER SET utf8mb4`]);
}
