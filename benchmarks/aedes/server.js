// Aedes (Node.js MQTT broker) for `make bench`: in-memory persistence, one process, one port.
// Usage: node server.js PORT [--ws]   — prints "aedes: listening on 127.0.0.1:PORT" once it
// accepts. With --ws the port speaks MQTT over WebSocket (the ws package, subprotocol mqtt), as
// Aedes' documentation sets it up.
import { createServer } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'

const port = Number(process.argv[2] || 1883)
const websocket = process.argv.includes('--ws')
const aedes = await Aedes.createBroker({ concurrency: 1000 })
let server
if (websocket) {
  server = createHttpServer()
  const wss = new WebSocketServer({
    server,
    handleProtocols: (protocols) => (protocols.has('mqtt') ? 'mqtt' : false)
  })
  wss.on('connection', (ws, req) => aedes.handle(createWebSocketStream(ws), req))
} else {
  server = createServer(aedes.handle)
}

server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  console.log(`aedes: listening on 127.0.0.1:${port}${websocket ? ' (websocket)' : ''}`)
})

function stop () {
  server.close()
  aedes.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
