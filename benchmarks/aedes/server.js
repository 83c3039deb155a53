// Aedes (Node.js MQTT broker) for `make bench`: in-memory persistence, one process, one port.
// Usage: node server.js PORT   — prints "aedes: listening on 127.0.0.1:PORT" once it accepts.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2] || 1883)
const aedes = await Aedes.createBroker({ concurrency: 1000 })
const server = createServer(aedes.handle)

server.listen({ port, host: '127.0.0.1', backlog: 4096 }, () => {
  console.log(`aedes: listening on 127.0.0.1:${port}`)
})

function stop () {
  server.close()
  aedes.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
