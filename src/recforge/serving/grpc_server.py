"""The gRPC server: the same core as the REST app, behind grpcio (``protos/recforge.proto``).

    server = create_grpc_server(source, port=8500); server.start(); server.wait_for_termination()

Ids arrive as strings and are read in the bundle's id type; errors map to status codes:
a bad field -> INVALID_ARGUMENT (the message names it), unknown item / model -> NOT_FOUND,
a bundle without the needed part -> FAILED_PRECONDITION, no version available yet ->
UNAVAILABLE. API keys travel as ``x-api-key`` metadata and are checked as over REST
(``security.AccessPolicy``): UNAUTHENTICATED without a valid key, PERMISSION_DENIED with one
of the wrong kind; Health needs none.
"""

from __future__ import annotations

import json
from concurrent import futures
from typing import Any

import grpc

from recforge.exceptions import ConfigError, DataError, UnknownIdError
from recforge.serving.feedback import Event, EventStore, OverloadedError, with_stored_history
from recforge.serving.protos import recforge_pb2 as pb
from recforge.serving.protos import recforge_pb2_grpc as pb_grpc
from recforge.serving.repository import NoServableError, lease
from recforge.serving.security import AccessPolicy, ApiKeys, AuthError, presented_key
from recforge.serving.source import ModelNotFound, RecommenderSource

MAX_LIST = 1000


def _value(v: pb.Value) -> Any:
    kind = v.WhichOneof("kind")
    return None if kind is None else getattr(v, kind)


def _items(entries: list[dict[str, Any]]) -> list[pb.ScoredItem]:
    return [pb.ScoredItem(item=str(e["item"]), score=float(e["score"])) for e in entries]


class RecommenderServicer(pb_grpc.RecommenderServicer):
    """Each RPC: read the message, call the core, write the answer."""

    def __init__(
        self,
        source: RecommenderSource,
        feedback: EventStore | None = None,
        feedback_history: int = 50,
    ) -> None:
        self.source = source
        self.feedback = feedback
        self.feedback_history = feedback_history

    def _call(self, context: grpc.ServicerContext, fn: Any) -> Any:
        try:
            return fn()
        except DataError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except (UnknownIdError, ModelNotFound) as e:
            context.abort(grpc.StatusCode.NOT_FOUND, str(e))
        except NoServableError as e:
            code = grpc.StatusCode.NOT_FOUND if e.status == 404 else grpc.StatusCode.UNAVAILABLE
            context.abort(code, str(e))
        except ConfigError as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))

    @staticmethod
    def _check_lists(**lists: Any) -> None:
        for name, values in lists.items():
            if len(values) > MAX_LIST:
                raise DataError(f"{name}: at most {MAX_LIST} entries.", column=name)

    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pb.RecommendResponse:
            self._check_lists(history=request.history, exclude=request.exclude)
            if request.k < 0:
                raise DataError(f"k: must be a positive integer, got {request.k}.", column="k")
            history = with_stored_history(
                self.feedback, request.user, list(request.history), self.feedback_history
            )
            with lease(self.source, request.model or None) as servable:
                rec = servable.recommend(
                    request.user,
                    k=request.k or 20,
                    history=history,
                    context={k: _value(v) for k, v in request.context.items()},
                    filters={k: [_value(x) for x in v.values] for k, v in request.filters.items()},
                    exclude=list(request.exclude),
                    explain=request.explain,
                )
            return pb.RecommendResponse(
                user=str(rec.user),
                items=_items(rec.to_dict()["items"]),
                version=rec.version,
                cold=rec.cold,
                trace_json=json.dumps(rec.trace) if rec.trace is not None else "",
            )

        return self._call(context, run)

    def Score(self, request: pb.ScoreRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pb.ScoreResponse:
            self._check_lists(items=request.items)
            with lease(self.source, request.model or None) as servable:
                out = servable.score(
                    request.user,
                    list(request.items),
                    context={k: _value(v) for k, v in request.context.items()},
                )
            return pb.ScoreResponse(
                user=str(out["user"]),
                items=_items(out["items"]),
                unknown_items=[str(i) for i in out["unknown_items"]],
                version=out["version"],
            )

        return self._call(context, run)

    def Similar(self, request: pb.SimilarRequest, context: grpc.ServicerContext) -> Any:
        def run() -> pb.SimilarResponse:
            if request.k < 0:
                raise DataError(f"k: must be a positive integer, got {request.k}.", column="k")
            with lease(self.source, request.model or None) as servable:
                out = servable.similar(request.item, k=request.k or 10)
            return pb.SimilarResponse(
                item=str(out["item"]),
                channel=out["channel"],
                items=_items(out["items"]),
                version=out["version"],
            )

        return self._call(context, run)

    def Models(self, request: pb.ModelsRequest, context: grpc.ServicerContext) -> Any:
        return pb.ModelsResponse(models_json=json.dumps(self.source.describe(), default=str))

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> Any:
        return pb.HealthResponse(live=True, ready=bool(self.source.ready()))

    def Feedback(self, request: pb.FeedbackRequest, context: grpc.ServicerContext) -> Any:
        """The twin of POST /v1/feedback: answered once the events are durable."""
        if self.feedback is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "no feedback store is configured.")
        if not 1 <= len(request.events) <= MAX_LIST:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"events: 1 to {MAX_LIST} entries.")
        events = [
            Event(
                e.user,
                e.item,
                e.type,
                e.value if e.HasField("value") else 1.0,
                e.timestamp if e.HasField("timestamp") else None,
                e.key if e.HasField("key") else None,
            )
            for e in request.events
        ]
        try:
            result = self.feedback.append(events)
        except ConfigError as e:  # a bad field, named
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except OverloadedError as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        return pb.FeedbackResponse(stored=result.stored, duplicates=result.duplicates)


# which key each RPC needs (None: open); checked by _KeyCheck before the servicer runs
RPC_KINDS = {
    "Recommend": "read",
    "Score": "read",
    "Similar": "read",
    "Models": "read",
    "Health": None,
    "Feedback": "feedback",
}


class _KeyCheck(grpc.ServerInterceptor):
    """API keys from ``x-api-key`` (or ``authorization: Bearer``) metadata."""

    def __init__(self, access: AccessPolicy) -> None:
        self.access = access

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        kind = RPC_KINDS.get(details.method.rsplit("/", 1)[-1], "admin")  # unknown: strictest
        if kind is None:
            return continuation(details)
        headers = {k.lower(): v for k, v in details.invocation_metadata or ()}
        try:
            self.access.authorize(kind, presented_key(headers))
        except AuthError as e:
            code = (
                grpc.StatusCode.UNAUTHENTICATED
                if e.status == 401
                else grpc.StatusCode.PERMISSION_DENIED
            )
            message = str(e)

            def deny(request: Any, context: grpc.ServicerContext) -> Any:
                context.abort(code, message)

            return grpc.unary_unary_rpc_method_handler(deny)
        return continuation(details)


def create_grpc_server(
    source: RecommenderSource,
    port: int,
    host: str = "127.0.0.1",
    max_workers: int = 8,
    max_message_bytes: int = 256 * 1024,
    access: AccessPolicy | None = None,
    feedback: EventStore | None = None,
    feedback_history: int = 50,
) -> grpc.Server:
    """A started-on-demand gRPC server over ``source`` bound to ``host:port`` (call
    ``start()``). Messages over ``max_message_bytes`` are refused (RESOURCE_EXHAUSTED).
    ``access``: the key policy (default: no keys, so reads are open only on loopback and
    Feedback is refused); ``feedback``: the event store behind the Feedback RPC."""
    access = access or AccessPolicy(ApiKeys(), host=host)
    access.check_bind()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="recforge-grpc"),
        interceptors=[_KeyCheck(access)],
        options=[
            ("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.so_reuseport", 0),
        ],
    )
    servicer = RecommenderServicer(source, feedback, feedback_history)
    pb_grpc.add_RecommenderServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise ConfigError(f"gRPC: cannot bind {host}:{port} (in use?); pick another --grpc-port.")
    return server
