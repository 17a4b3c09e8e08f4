// Baseline (b) of BENCHMARKS.md: the WebSocket broadcast server many teams would write themselves
// with the `ws` package. Protocol shared with the Rust baseline (bench/src/bin/ws_baseline.rs):
// every binary frame a client sends is forwarded, unchanged, to every other connected client.
// No auth, no storage. Usage: node server.js [port] [host]; prints "listening <port>" when ready.
'use strict';

const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const host = process.argv[3] || '127.0.0.1';

const wss = new WebSocketServer({ host, port, perMessageDeflate: false, clientTracking: true });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const client of wss.clients) {
      if (client !== ws && client.readyState === 1) {
        client.send(data, { binary: isBinary });
      }
    }
  });
  // A reset peer must not crash the server.
  ws.on('error', () => {});
});

wss.on('listening', () => {
  process.stdout.write(`listening ${wss.address().port}\n`);
});

process.on('SIGTERM', () => process.exit(0));
