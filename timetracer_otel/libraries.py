"""Every client library timetracer records and replays, declared once.

A :class:`Library` names everything about one library: the plugin name users enable,
the pip extra and minimum versions that bring it, the OpenTelemetry instrumentors that
make its spans, the module that captures its calls, the module that answers them in
replay, and the protocol its calls speak (the shared module in
:mod:`timetracer_otel.protocols`). :mod:`timetracer_otel.plugins`, the replayers and
the replay session all read this table, so adding a library is one entry here plus its
two modules. Reading the table imports no library.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Library", "LIBRARIES"]


@dataclass(frozen=True)
class Library:
    name: str  # the plugin name, and the module whose presence means the library is installed
    extra: str  # pip extra that brings the library and the instrumentor ("": nothing to bring)
    requires: tuple[str, ...]  # the library's requirements in that extra (pyproject.toml agrees)
    # "module:Class" of each OpenTelemetry instrumentor making the library's client spans
    # (grpc: one for sync channels, one for grpc.aio)
    instrumentors: tuple[str, ...]
    capture: str  # module with install() / uninstall(), recording the calls under the instrumentor
    replay: str  # module with install() / uninstall(), answering the calls from a cassette
    protocol: str  # timetracer_otel.protocols.<protocol>: request shape, redaction, matching view
    # The instrumentor's declared version range lags the library (SQLAlchemy 2.1): the
    # capture layer supports the newer versions, so the range check is skipped.
    skip_dep_check: bool = False
    # Plugins enabled with this one where their library is installed: a library that drives
    # this one (SQLAlchemy on asyncpg) is answered at its own layer in replay, so its calls
    # must be recorded there, not as this library's.
    companions: tuple[str, ...] = ()


def _declared(*libraries: Library) -> dict[str, Library]:
    return {library.name: library for library in libraries}


LIBRARIES: dict[str, Library] = _declared(
    Library(
        name="httpx",
        extra="httpx",
        requires=("httpx>=0.25", "sniffio>=1.3"),
        instrumentors=("opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor",),
        capture="timetracer_otel.capture.httpx",
        replay="timetracer_otel.replayers.httpx",
        protocol="http",
    ),
    Library(
        name="httpx2",
        extra="httpx2",
        # httpx's transport API in its own module; OpenTelemetry's httpx package has its
        # instrumentor since 0.65b0. Python 3.11 and later, as httpx2 itself.
        requires=("httpx2>=2.16; python_version >= '3.11'",),
        instrumentors=("opentelemetry.instrumentation.httpx:HTTPX2ClientInstrumentor",),
        capture="timetracer_otel.capture.httpx2",
        replay="timetracer_otel.replayers.httpx2",
        protocol="http",
    ),
    Library(
        name="requests",
        extra="requests",
        requires=("requests>=2.28",),
        instrumentors=("opentelemetry.instrumentation.requests:RequestsInstrumentor",),
        capture="timetracer_otel.capture.requests",
        replay="timetracer_otel.replayers.requests",
        protocol="http",
    ),
    Library(
        name="aiohttp",
        extra="aiohttp",
        requires=("aiohttp>=3.9",),
        instrumentors=("opentelemetry.instrumentation.aiohttp_client:AioHttpClientInstrumentor",),
        capture="timetracer_otel.capture.aiohttp",
        replay="timetracer_otel.replayers.aiohttp",
        protocol="http",
    ),
    Library(
        name="urllib3",
        extra="urllib3",
        requires=("urllib3>=2",),
        instrumentors=("opentelemetry.instrumentation.urllib3:URLLib3Instrumentor",),
        capture="timetracer_otel.capture.urllib3",
        replay="timetracer_otel.replayers.urllib3",
        protocol="http",
    ),
    Library(
        name="sqlalchemy",
        extra="sqlalchemy",
        requires=("sqlalchemy[asyncio]>=2.0",),
        instrumentors=("opentelemetry.instrumentation.sqlalchemy:SQLAlchemyInstrumentor",),
        capture="timetracer_otel.capture.sqlalchemy",
        replay="timetracer_otel.replayers.sqlalchemy",
        protocol="sql",
        skip_dep_check=True,
    ),
    Library(
        name="asyncpg",
        extra="asyncpg",
        # 0.29 has no fetchmany (0.30), which is then neither recorded nor replayed
        requires=("asyncpg>=0.29",),
        instrumentors=("opentelemetry.instrumentation.asyncpg:AsyncPGInstrumentor",),
        capture="timetracer_otel.capture.asyncpg",
        replay="timetracer_otel.replayers.asyncpg",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="psycopg",
        extra="psycopg",
        requires=("psycopg>=3.2",),
        instrumentors=("opentelemetry.instrumentation.psycopg:PsycopgInstrumentor",),
        capture="timetracer_otel.capture.psycopg",
        replay="timetracer_otel.replayers.psycopg",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="psycopg2",
        extra="psycopg2",
        requires=(),  # psycopg2 or psycopg2-binary: the application brings the one it uses
        instrumentors=("opentelemetry.instrumentation.psycopg2:Psycopg2Instrumentor",),
        capture="timetracer_otel.capture.psycopg2",
        replay="timetracer_otel.replayers.psycopg2",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="pymysql",
        extra="pymysql",
        requires=("pymysql>=1.0",),
        instrumentors=("opentelemetry.instrumentation.pymysql:PyMySQLInstrumentor",),
        capture="timetracer_otel.capture.pymysql",
        replay="timetracer_otel.replayers.pymysql",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="aiomysql",
        extra="aiomysql",
        # Tortoise ORM's and databases' MySQL backends run on it when asyncmy is not installed
        requires=("aiomysql>=0.2",),
        instrumentors=("timetracer_otel.instrumentation.aiomysql:AiomysqlInstrumentor",),
        capture="timetracer_otel.capture.aiomysql",
        replay="timetracer_otel.replayers.aiomysql",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="asyncmy",
        extra="asyncmy",
        # what Tortoise ORM's and databases' MySQL backends take when it is installed
        requires=("asyncmy>=0.2",),
        instrumentors=("timetracer_otel.instrumentation.asyncmy:AsyncmyInstrumentor",),
        capture="timetracer_otel.capture.asyncmy",
        replay="timetracer_otel.replayers.asyncmy",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="sqlite3",
        extra="",  # the standard library's
        requires=(),
        instrumentors=("timetracer_otel.instrumentation.sqlite3:Sqlite3Instrumentor",),
        capture="timetracer_otel.capture.sqlite3",
        replay="timetracer_otel.replayers.sqlite3",
        protocol="sql",
        companions=("sqlalchemy", "aiosqlite"),
    ),
    Library(
        name="aiosqlite",
        extra="aiosqlite",
        # Tortoise ORM's and databases' SQLite backends run on it
        requires=("aiosqlite>=0.17",),
        instrumentors=("timetracer_otel.instrumentation.aiosqlite:AiosqliteInstrumentor",),
        capture="timetracer_otel.capture.aiosqlite",
        replay="timetracer_otel.replayers.aiosqlite",
        protocol="sql",
        companions=("sqlalchemy",),
    ),
    Library(
        name="redis",
        extra="redis",
        requires=("redis>=4.6",),
        instrumentors=("opentelemetry.instrumentation.redis:RedisInstrumentor",),
        capture="timetracer_otel.capture.redis",
        replay="timetracer_otel.replayers.redis",
        protocol="redis",
    ),
    Library(
        name="pymongo",
        extra="pymongo",
        # 4.18: the command runner replay stands in below
        requires=("pymongo>=4.18",),
        instrumentors=("opentelemetry.instrumentation.pymongo:PymongoInstrumentor",),
        capture="timetracer_otel.capture.pymongo",
        replay="timetracer_otel.replayers.pymongo",
        protocol="mongo",
    ),
    Library(
        name="motor",
        extra="motor",
        # Motor drives pymongo underneath: pymongo's command monitoring sees its calls, and
        # pymongo's replayer answers them.
        requires=("motor>=3.7", "pymongo>=4.18"),
        instrumentors=("opentelemetry.instrumentation.pymongo:PymongoInstrumentor",),
        capture="timetracer_otel.capture.pymongo",
        replay="timetracer_otel.replayers.pymongo",
        protocol="mongo",
    ),
    Library(
        name="grpc",
        extra="grpc",
        # protobuf: messages are recorded as JSON (json_format) and rebuilt from their type
        requires=("grpcio>=1.62", "protobuf>=5.26"),
        instrumentors=(
            "opentelemetry.instrumentation.grpc:GrpcInstrumentorClient",
            "opentelemetry.instrumentation.grpc:GrpcAioInstrumentorClient",
        ),
        capture="timetracer_otel.capture.grpc",
        replay="timetracer_otel.replayers.grpc",
        protocol="grpc",
    ),
    Library(
        name="smtplib",
        extra="",  # the standard library's; its instrumentor is timetracer's own
        requires=(),
        instrumentors=("timetracer_otel.instrumentation.smtplib:SmtplibInstrumentor",),
        capture="timetracer_otel.capture.smtplib",
        replay="timetracer_otel.replayers.smtplib",
        protocol="smtp",
    ),
    Library(
        name="aiosmtplib",
        extra="aiosmtplib",
        requires=("aiosmtplib>=3",),
        instrumentors=("timetracer_otel.instrumentation.aiosmtplib:AiosmtplibInstrumentor",),
        capture="timetracer_otel.capture.aiosmtplib",
        replay="timetracer_otel.replayers.aiosmtplib",
        protocol="smtp",
    ),
    Library(
        name="amqp",
        extra="amqp",
        # py-amqp, under kombu's amqp:// transport and Celery's publishing
        requires=("amqp>=5.1",),
        instrumentors=("timetracer_otel.instrumentation.amqp:AmqpInstrumentor",),
        capture="timetracer_otel.capture.amqp",
        replay="timetracer_otel.replayers.amqp",
        protocol="amqp",
    ),
    Library(
        name="aio_pika",
        extra="aio-pika",
        # aio-pika runs aiormq, which capture and replay meet; FastStream's RabbitMQ broker too
        requires=("aio-pika>=9.4",),
        instrumentors=("opentelemetry.instrumentation.aio_pika:AioPikaInstrumentor",),
        capture="timetracer_otel.capture.aio_pika",
        replay="timetracer_otel.replayers.aio_pika",
        protocol="amqp",
    ),
)
