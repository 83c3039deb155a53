"""What a benchmark run does: the options, and the clients each worker process runs.

Four scenarios, each a set of MQTT clients with one role apiece:

``fanin``
    ``n`` publishers, each on its own topic ``PREFIX/fanin/<i>``, and one subscriber on the
    wildcard ``PREFIX/fanin/+``: every message is one delivery.
``fanout``
    one publisher on ``PREFIX/fanout`` and ``n`` subscribers on that topic: every message is ``n``
    deliveries.
``pairs``
    ``n`` publisher/subscriber pairs, pair ``i`` on ``PREFIX/pairs/<i>``: one delivery each.
``sharedsub``
    ``n`` publishers, each on ``PREFIX/sharedsub/<client id>``, and ``share_subscribers``
    subscribers sharing one subscription ``$share/perf/PREFIX/sharedsub/#`` (MQTT 5.0 4.8.2;
    Mosquitto takes it from 3.1.1 clients too): every message is one delivery, to one member of
    the group. This is the Open MQTT Benchmark Suite's fan-in (``sharedsub-1K-5-1K-1K``).
``conns``
    ``n`` idle connections, each subscribed to ``PREFIX/conns/<i>`` (none with
    ``subscribe_idle`` False); nothing is published. It measures how fast the broker accepts
    connections, how long each handshake takes, and what each connection costs it in memory.
    ``connect_rate`` paces the connections (the suite's ``conn-tcp-10k-100``: 100 per second).

``rate`` is the total of PUBLISH messages per second offered by all publishers together (so a
fan-out to 50 at ``rate`` 1,000 offers 50,000 deliveries/s); 0 is max mode, where publishers send
as fast as an end-to-end window of undelivered messages allows, so the broker (not a queue growing
in it) sets the pace. ``PREFIX`` holds a random token so that runs never see each other's messages.

Durability (issue 5): with ``persistent`` the subscribers keep a session (MQTT 3.1.1 clean session
0; MQTT 5 Clean Start 0 and a Session Expiry Interval), so a durable broker records every QoS 1/2
message routed to them before it acknowledges it. ``offline`` (which implies ``persistent``) has
the subscribers subscribe and disconnect before anything is published: the load is queued for them
and counted as sent when acknowledged; after the window they reconnect and drain the queue, and
the report says how many of the queued messages arrived. ``messages`` caps the total published
(a fixed backlog, e.g. for a restore measurement).

Several brokers (``ports``: the nodes of a cluster on one host): the clients are spread over them
so that every message crosses nodes where it can. Subscriber ``i`` (in the order built) connects
to node ``i mod N`` and publisher ``i`` to node ``(i + 1) mod N``: in ``pairs`` each pair's
publisher and subscriber are on neighbouring nodes; with one subscriber (``fanin``) it is on the
first node and the publishers on the others. With ``same_node`` (``pairs`` only) each publisher
connects to its subscriber's node instead, so that no message has to cross: the load of N
separate brokers (say N Mosquittos, each holding what one process can), not a cluster at all.

Clients are dealt round-robin over ``procs`` worker processes. A process may open at most
:data:`MAX_CONNS_PER_PROC` connections, well under this machine's 20,000 file descriptors per
process, so ``conns`` with 19,000 connections runs at least two workers whatever ``procs`` says.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

SCENARIOS = ("fanin", "fanout", "pairs", "sharedsub", "conns")

#: The default client count ``n`` per scenario.
DEFAULT_CLIENTS = {"fanin": 10, "fanout": 50, "pairs": 50, "sharedsub": 100, "conns": 1000}

#: The shared subscription's group name (the Open MQTT Benchmark Suite's ``$share/perf/...``).
SHARE_GROUP = "perf"

#: Connections one worker process may hold (each is a file descriptor; the limit is 20,000).
MAX_CONNS_PER_PROC = 15_000


@dataclass(slots=True)
class Options:
    """Everything ``midge bench`` was asked to do (the command line, parsed)."""

    scenario: str = "fanin"
    host: str = "127.0.0.1"
    port: int = 1883
    clients: int = 0  # 0: DEFAULT_CLIENTS[scenario]
    qos: int = 0
    payload: int = 64
    rate: float = 10_000.0  # PUBLISH messages/s from all publishers together; 0 = max mode
    warmup: float = 2.0
    duration: float = 5.0
    procs: int = 1
    version: int = 4  # MQTT protocol level: 3, 4 or 5
    inflight: int = 64  # QoS 1/2: unacknowledged PUBLISHes per publisher
    window: int = 5000  # max mode: deliveries outstanding end to end, all publishers together
    keepalive: int = 0  # seconds; 0 = no keep-alive (and no PINGREQ)
    drain: float = 2.0  # seconds to wait after the window for messages still on their way
    tick: float = 0.001  # seconds between pacing rounds
    connect_concurrency: int = 64  # CONNECT handshakes in flight, all workers together
    source_addresses: int = 16  # loopback broker: spread clients over 127.0.0.2 .. (0 = don't)
    broker_pid: int | None = None
    username: str | None = None
    password: str | None = None
    prefix: str = ""  # topic prefix; "" = "bench/<random token>"
    persistent: bool = False  # subscribers keep a session (clean session 0 / session expiry)
    offline: bool = False  # subscribers are away while the load is published (implies persistent)
    messages: int = 0  # publish at most this many messages in all; 0 = no cap
    reconnect: bool = True  # offline: reconnect and drain after the window (False: leave queued)
    websocket: bool = False  # MQTT over WebSocket (a protocol websockets listener)
    share_subscribers: int = 5  # sharedsub: the members of the shared subscription
    connect_rate: float = 0.0  # new connections per second, all workers together; 0 = no pacing
    subscribe_idle: bool = True  # conns: each connection subscribes to a topic of its own
    stagger: bool = False  # paced: publishers take turns (round-robin), spread evenly in time
    ports: tuple[int, ...] = ()  # several brokers (cluster nodes) at host: clients spread over them
    same_node: bool = False  # ports: each publisher on its subscriber's node (nothing crosses)
    more_broker_pids: tuple[int, ...] = ()  # the other nodes' processes, summed with broker_pid's
    aux_pids: tuple[int, ...] = ()  # processes reported apart (the cluster's Redis)

    def __post_init__(self) -> None:
        if self.offline:
            self.persistent = True
        if not self.clients:
            self.clients = DEFAULT_CLIENTS.get(self.scenario, 10)
        if not self.prefix:
            self.prefix = f"bench/{secrets.token_hex(4)}"

    @property
    def max_mode(self) -> bool:
        return self.rate <= 0 and self.scenario != "conns"

    @property
    def fanout(self) -> int:
        """Deliveries each published message makes."""
        return self.clients if self.scenario == "fanout" else 1

    @property
    def publishers(self) -> int:
        pubs = {"fanin": self.clients, "fanout": 1, "pairs": self.clients}
        pubs["sharedsub"] = self.clients
        return pubs.get(self.scenario, 0)

    @property
    def subscribers(self) -> int:
        if self.scenario == "conns":
            return self.clients if self.subscribe_idle else 0
        subs = {"fanin": 1, "fanout": self.clients, "sharedsub": self.share_subscribers}
        return subs.get(self.scenario, self.clients)

    @property
    def connections(self) -> int:
        if self.scenario == "conns":
            return self.clients
        return self.publishers + self.subscribers

    @property
    def worker_count(self) -> int:
        """``procs``, raised so no worker holds more than :data:`MAX_CONNS_PER_PROC` sockets."""
        needed = math.ceil(self.connections / MAX_CONNS_PER_PROC)
        return max(1, self.procs, needed)


@dataclass(slots=True)
class ClientSpec:
    """One MQTT connection: what it subscribes to, what it publishes and how fast."""

    client_id: str
    subscribe: str | None = None
    publish: str | None = None
    rate: float = 0.0  # messages/s for this publisher; 0 with a publish topic = max mode
    quota: int = 0  # the most this publisher sends; 0 = no cap
    port: int = 0  # the broker's port for this client (Options.ports); 0 = the run's port


@dataclass(slots=True)
class WorkerPlan:
    """The part of a run one worker process carries out (picklable: it crosses to the process)."""

    index: int
    host: str
    port: int
    version: int
    qos: int
    payload: int
    keepalive: int
    inflight: int
    window: int
    fanout: int
    max_mode: bool
    tick: float
    drain: float
    connect_concurrency: int
    epoch_ns: int
    source_addresses: int = 16
    username: str | None = None
    password: str | None = None
    persistent: bool = False
    offline: bool = False
    reconnect: bool = True
    websocket: bool = False  # MQTT over WebSocket (midge.bench.websocket)
    connect_rate: float = 0.0  # this worker's share of the connections per second (0: unpaced)
    stagger: bool = False  # paced: round-robin over the publishers (midge.bench.worker)
    clients: list[ClientSpec] = field(default_factory=list)


def build_clients(options: Options) -> list[ClientSpec]:
    """Every client of the run, subscribers first (subscribed before anything is sent)."""
    scenario, n, prefix = options.scenario, options.clients, options.prefix
    token = prefix.rsplit("/", 1)[-1]
    width = len(str(max(n - 1, 1)))
    subs: list[ClientSpec] = []
    pubs: list[ClientSpec] = []
    per_pub = options.rate / options.publishers if options.publishers and options.rate > 0 else 0.0
    if scenario == "fanin":
        subs.append(ClientSpec(f"mb-{token}-s0", subscribe=f"{prefix}/fanin/+"))
        for i in range(n):
            topic = f"{prefix}/fanin/{i:0{width}d}"
            pubs.append(ClientSpec(f"mb-{token}-p{i}", publish=topic, rate=per_pub))
    elif scenario == "fanout":
        topic = f"{prefix}/fanout"
        subs.extend(ClientSpec(f"mb-{token}-s{i}", subscribe=topic) for i in range(n))
        pubs.append(ClientSpec(f"mb-{token}-p0", publish=topic, rate=per_pub))
    elif scenario == "pairs":
        for i in range(n):
            topic = f"{prefix}/pairs/{i:0{width}d}"
            subs.append(ClientSpec(f"mb-{token}-s{i}", subscribe=topic))
            pubs.append(ClientSpec(f"mb-{token}-p{i}", publish=topic, rate=per_pub))
    elif scenario == "sharedsub":
        shared = f"$share/{SHARE_GROUP}/{prefix}/sharedsub/#"
        subs.extend(
            ClientSpec(f"mb-{token}-s{i}", subscribe=shared)
            for i in range(options.share_subscribers)
        )
        for i in range(n):
            client_id = f"mb-{token}-p{i}"
            pubs.append(
                ClientSpec(client_id, publish=f"{prefix}/sharedsub/{client_id}", rate=per_pub)
            )
    elif scenario == "conns":
        idle = options.subscribe_idle
        subs.extend(
            ClientSpec(f"mb-{token}-c{i}", subscribe=f"{prefix}/conns/{i}" if idle else None)
            for i in range(n)
        )
    else:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if options.messages and pubs:
        share, extra = divmod(options.messages, len(pubs))
        for i, spec in enumerate(pubs):
            spec.quota = share + (1 if i < extra else 0) or -1  # -1: this one sends nothing
    ports = options.ports
    if len(ports) > 1:
        for i, spec in enumerate(subs):
            spec.port = ports[i % len(ports)]
        # Publishers on the next node; with one subscriber (fanin), on the other nodes; or, with
        # same_node (pairs only), on their subscriber's.
        if options.same_node and options.scenario != "pairs":
            raise ValueError("--same-node is for pairs (each pair on one node)")
        others = ports[1:] if len(subs) == 1 and not options.same_node else None
        shift = 0 if options.same_node else 1
        for i, spec in enumerate(pubs):
            spec.port = others[i % len(others)] if others else ports[(i + shift) % len(ports)]
    return subs + pubs


def plan_workers(options: Options, epoch_ns: int) -> list[WorkerPlan]:
    """Deal the clients round-robin over the worker processes."""
    count = options.worker_count
    plans = [
        WorkerPlan(
            index=i,
            host=options.host,
            port=options.port,
            version=options.version,
            qos=options.qos,
            payload=options.payload,
            keepalive=options.keepalive,
            inflight=options.inflight,
            window=options.window,
            fanout=options.fanout,
            max_mode=options.max_mode,
            tick=options.tick,
            drain=options.drain,
            connect_concurrency=max(4, options.connect_concurrency // count),
            epoch_ns=epoch_ns,
            source_addresses=options.source_addresses,
            username=options.username,
            password=options.password,
            persistent=options.persistent,
            offline=options.offline,
            reconnect=options.reconnect,
            websocket=options.websocket,
            connect_rate=options.connect_rate / count,
            stagger=options.stagger,
        )
        for i in range(count)
    ]
    for i, spec in enumerate(build_clients(options)):
        plans[i % count].clients.append(spec)
    return plans
